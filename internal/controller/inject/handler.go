package inject

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// Path is where the webhook is served.
const Path = "/inject"

// Handler answers admission requests for pods with the patch that injects
// the proxy.
type Handler struct {
	Config  *Config // defaulted and checked
	Log     *slog.Logger
	Metrics func(outcome string) // counts injected, skipped, refused, error
}

var _ admission.Handler = (*Handler)(nil)

// Handle implements admission.Handler.
func (h *Handler) Handle(_ context.Context, req admission.Request) admission.Response {
	count := func(outcome string) {
		if h.Metrics != nil {
			h.Metrics(outcome)
		}
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		count("error")
		return admission.Errored(http.StatusBadRequest, err)
	}
	name := pod.Name
	if name == "" {
		name = pod.GenerateName + "*"
	}
	log := h.Log.With("namespace", req.Namespace, "pod", name)
	out, reason, err := h.Config.Pod(&pod, req.Namespace)
	switch {
	case errors.Is(err, ErrRefused):
		count("refused")
		log.Info("pod refused", "reason", err)
		return admission.Denied(err.Error())
	case err != nil:
		count("error")
		log.Error("injection failed", "err", err)
		return admission.Errored(http.StatusInternalServerError, err)
	case out == nil:
		count("skipped")
		log.Debug("pod not injected", "reason", reason)
		return admission.Allowed(reason)
	}
	b, err := json.Marshal(out)
	if err != nil {
		count("error")
		return admission.Errored(http.StatusInternalServerError, err)
	}
	count("injected")
	log.Debug("pod injected")
	return admission.PatchResponseFromRaw(req.Object.Raw, b)
}
