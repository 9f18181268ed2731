package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// misaki check is a pre-flight for the mesh in a cluster, in the spirit of
// linkerd check: each check prints one line, passed, failed (with a hint),
// warned or skipped, and the command fails when any check failed.

var checkCommand = &command{
	name:    "check",
	summary: "Check the mesh in a Kubernetes cluster: API server, CRD, controller, webhook, proxies",
	help: `Runs these checks against the cluster the kubeconfig names, one line each
(PASS, FAIL, WARN or SKIP; ✓ ✗ ‼ - on a terminal), with a hint under each
that did not pass:

  kubernetes-api    the API server answers
  crd               routes.mesh.misaki.io is installed, established, and the
                    one this CLI was built with: the same versions, served
                    and stored alike, and the same schema (compared by a
                    digest of each version's schema)
  controller        the controller's Deployment (-n, -l) is Available
  controller-ready  each ready controller pod answers /readyz, through the
                    API server's pod proxy (so it works from outside)
  webhook           the injection webhook is configured, its caBundle is
                    set, and its Service has ready endpoints
  injection         with --inject-dry-run: a pod created with dryRun=All in
                    --inject-namespace, labelled misaki.io/inject=enabled,
                    comes back with the proxy (the API server calls the
                    webhook for dry runs too; nothing is stored)
  proxies           proxies connected to the controller, from its metrics
                    (misaki_controller_xds_streams), and configs they refused
  routes            every Route is Accepted

A check whose prerequisite did not pass is skipped. Exit status 1 when any
check failed; warnings do not fail. -o json or -o yaml print
{ok, checks: [{name, status, message, hint}]}.

Examples:
  misaki check
  misaki check --context prod-eu --inject-dry-run
  misaki check -n mesh -l app=misaki-controller -o json`,
	run: runCheck,
}

// defaultControllerSelector matches the chart's controller Deployment
// (charts/misaki/templates/deployment.yaml).
const defaultControllerSelector = "app.kubernetes.io/name=misaki,app.kubernetes.io/component=controller"

// checkOptions are misaki check's flags.
type checkOptions struct {
	kubeconfig, context string
	namespace, selector string // the controller's Deployment
	webhookConfig       string // the MutatingWebhookConfiguration's name
	injectDryRun        bool
	injectNamespace     string
}

// Check outcomes.
const (
	checkPass = "pass"
	checkFail = "fail"
	checkWarn = "warn" // worth a look, not a failure
	checkSkip = "skip" // not run: a prerequisite did not pass, or not asked for
)

// checkResult is one check's outcome, as -o json prints it.
type checkResult struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
}

// checkReport is every check's outcome; OK is false when one failed.
type checkReport struct {
	OK     bool          `json:"ok"`
	Checks []checkResult `json:"checks"`
}

func runCheck(ctx context.Context, e *env, args []string) error {
	fs := e.flags()
	var o checkOptions
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig `file` (default $KUBECONFIG, else ~/.kube/config, else in-cluster)")
	fs.StringVar(&o.context, "context", "", "the kubeconfig `context` to use (default its current context)")
	fs.StringVar(&o.namespace, "namespace", "misaki-system", "Misaki's `namespace`, where the controller runs")
	fs.StringVar(&o.namespace, "n", "misaki-system", "")
	fs.StringVar(&o.selector, "selector", defaultControllerSelector, "label `selector` of the controller's Deployment")
	fs.StringVar(&o.selector, "l", defaultControllerSelector, "")
	fs.StringVar(&o.webhookConfig, "webhook-config", "misaki-sidecar-injector", "`name` of the injection webhook's MutatingWebhookConfiguration")
	fs.BoolVar(&o.injectDryRun, "inject-dry-run", false, "also create a pod with dryRun=All and check that the webhook injects the proxy (nothing is stored)")
	fs.StringVar(&o.injectNamespace, "inject-namespace", "default", "`namespace` of the --inject-dry-run pod")
	if _, err := e.parse(fs, args, 0, 0); err != nil {
		return err
	}
	if _, err := labels.Parse(o.selector); err != nil {
		return usagef("--selector %q: %v", o.selector, err)
	}
	if o.namespace == "" || o.injectNamespace == "" {
		return usagef("--namespace and --inject-namespace must not be empty")
	}
	r := e.newChecker(o).run(ctx)
	err := e.show(r, func(w io.Writer) error { return writeChecks(w, r, isTerminal(e.stdout)) })
	if err != nil {
		return err
	}
	var failed []string
	for _, c := range r.Checks {
		if c.Status == checkFail {
			failed = append(failed, c.Name)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d checks failed: %s", len(failed), len(r.Checks), strings.Join(failed, ", "))
	}
	return nil
}

// checker runs the checks against one cluster; later checks use what
// earlier ones found.
type checker struct {
	o      checkOptions
	host   string
	cfgErr error // the kubeconfig did not load; every client is nil
	kube   kubernetes.Interface
	ext    apiextensionsclient.Interface
	dyn    dynamic.Interface

	deploy     *appsv1.Deployment // the controller's, once found
	ready      []corev1.Pod       // its ready pods, once they answered /readyz
	webhookOff bool               // the controller runs with --webhook-addr=0
}

// newChecker makes the clients; a kubeconfig that does not load fails the
// first check instead of the command, so -o json still has every check.
func (e *env) newChecker(o checkOptions) *checker {
	c := &checker{o: o}
	cfg, err := e.kubeConfig(o.kubeconfig, o.context)
	if err == nil {
		c.host = cfg.Host
		c.kube, err = kubernetes.NewForConfig(cfg)
	}
	if err == nil {
		c.ext, err = apiextensionsclient.NewForConfig(cfg)
	}
	if err == nil {
		c.dyn, err = dynamic.NewForConfig(cfg)
	}
	c.cfgErr = err
	return c
}

// checkDef is one check: what it needs to have passed (or warned) first.
type checkDef struct {
	name  string
	needs []string
	run   func(context.Context) checkResult
}

func (c *checker) checks() []checkDef {
	api := []string{"kubernetes-api"}
	return []checkDef{
		{"kubernetes-api", nil, c.checkAPI},
		{"crd", api, c.checkCRD},
		{"controller", api, c.checkController},
		{"controller-ready", []string{"controller"}, c.checkControllerReady},
		{"webhook", api, c.checkWebhook},
		{"injection", []string{"webhook"}, c.checkInjection},
		{"proxies", []string{"controller-ready"}, c.checkProxies},
		{"routes", []string{"crd"}, c.checkRoutes},
	}
}

// run runs every check in order.
func (c *checker) run(ctx context.Context) checkReport {
	r := checkReport{OK: true}
	status := map[string]string{}
	for _, d := range c.checks() {
		var res checkResult
		for _, n := range d.needs {
			if s := status[n]; s != checkPass && s != checkWarn {
				res = checkResult{Status: checkSkip, Message: fmt.Sprintf("not run: %s %s", n, pastTense(s))}
				break
			}
		}
		if res.Status == "" {
			res = d.run(ctx)
		}
		res.Name = d.name
		status[d.name] = res.Status
		if res.Status == checkFail {
			r.OK = false
		}
		r.Checks = append(r.Checks, res)
	}
	return r
}

func pastTense(status string) string {
	switch status {
	case checkFail:
		return "failed"
	case checkSkip:
		return "was skipped"
	}
	return status
}

func pass(format string, args ...any) checkResult {
	return checkResult{Status: checkPass, Message: fmt.Sprintf(format, args...)}
}

func skip(format string, args ...any) checkResult {
	return checkResult{Status: checkSkip, Message: fmt.Sprintf(format, args...)}
}

// fail is a failed check with its message and a hint.
func fail(hint, format string, args ...any) checkResult {
	return checkResult{Status: checkFail, Message: fmt.Sprintf(format, args...), Hint: hint}
}

// warn is a warning with its message and a hint.
func warn(hint, format string, args ...any) checkResult {
	return checkResult{Status: checkWarn, Message: fmt.Sprintf(format, args...), Hint: hint}
}

// writeChecks prints a line per check and a summary; on a terminal the
// status is a symbol (✓ ✗ ‼ -), elsewhere a word (PASS FAIL WARN SKIP),
// so a log or grep reads it.
func writeChecks(w io.Writer, r checkReport, terminal bool) error {
	marks := map[string]string{checkPass: "PASS", checkFail: "FAIL", checkWarn: "WARN", checkSkip: "SKIP"}
	if terminal {
		marks = map[string]string{checkPass: "✓", checkFail: "✗", checkWarn: "‼", checkSkip: "-"}
	}
	width := 0
	for _, c := range r.Checks {
		width = max(width, len(c.Name))
	}
	count := map[string]int{}
	for _, c := range r.Checks {
		count[c.Status]++
		mark := marks[c.Status]
		if _, err := fmt.Fprintf(w, "%s %-*s  %s\n", mark, width, c.Name, cell(c.Message)); err != nil {
			return err
		}
		if c.Hint != "" {
			pad := strings.Repeat(" ", len([]rune(mark))+1+width+2)
			if _, err := fmt.Fprintf(w, "%shint: %s\n", pad, cell(c.Hint)); err != nil {
				return err
			}
		}
	}
	summary := fmt.Sprintf("%d checks: %d passed", len(r.Checks), count[checkPass])
	for _, s := range []struct {
		status, word string
	}{{checkFail, "failed"}, {checkWarn, "warned"}, {checkSkip, "skipped"}} {
		if count[s.status] > 0 {
			summary += fmt.Sprintf(", %d %s", count[s.status], s.word)
		}
	}
	_, err := fmt.Fprintf(w, "\n%s\n", summary)
	return err
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
