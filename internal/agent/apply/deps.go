package apply

import (
	_ "github.com/fluxcd/pkg/ssa"
	_ "sigs.k8s.io/cli-utils/pkg/kstatus/status"
)
