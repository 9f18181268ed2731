package controller

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/misaki-io/misaki/internal/controller/ca"
)

// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;create;update

// rootCerts keeps the CA bundle in a ConfigMap (ca.RootCertConfigMap) in
// every namespace whose pods may be injected, as Istio keeps
// istio-ca-root-cert: the injector mounts it into each proxy as
// xds.caFile, and the kubelet refreshes it in running pods when the CA
// rotates. Only the leader writes. The manager's cache holds only
// ConfigMaps of that name.
type rootCerts struct {
	client  client.Client
	reader  client.Reader // uncached, for a ConfigMap someone else created
	bundle  func() []byte
	exclude []string
	log     *slog.Logger
	changed chan event.GenericEvent // a new bundle: every namespace again
}

// notify is the CA's OnBundle: it never blocks (one pending event stands
// for any number).
func (r *rootCerts) notify([]byte) {
	select {
	case r.changed <- event.GenericEvent{Object: &corev1.Namespace{}}:
	default:
	}
}

func (r *rootCerts) setup(mgr manager.Manager) error {
	byNamespace := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		if o.GetName() != ca.RootCertConfigMap {
			return nil
		}
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: o.GetNamespace()}}}
	})
	all := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		var list corev1.NamespaceList
		if err := r.client.List(ctx, &list); err != nil {
			r.log.Error("list namespaces for the CA bundle", "err", err)
			return nil
		}
		out := make([]reconcile.Request, 0, len(list.Items))
		for _, ns := range list.Items {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: ns.Name}})
		}
		return out
	})
	yes := true
	return ctrl.NewControllerManagedBy(mgr).
		Named("root-cert").
		WithOptions(controller.Options{SkipNameValidation: &yes}).
		For(&corev1.Namespace{}).
		Watches(&corev1.ConfigMap{}, byNamespace).
		WatchesRawSource(source.Channel(r.changed, all)).
		Complete(r)
}

// Reconcile writes the bundle into the namespace req.Name.
func (r *rootCerts) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var ns corev1.Namespace
	if err := r.client.Get(ctx, req.NamespacedName, &ns); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if ns.DeletionTimestamp != nil || slices.Contains(r.exclude, ns.Name) {
		return reconcile.Result{}, nil
	}
	bundle := r.bundle()
	if bundle == nil {
		return reconcile.Result{RequeueAfter: 2 * time.Second}, nil // the CA is loading
	}
	key := client.ObjectKey{Namespace: ns.Name, Name: ca.RootCertConfigMap}
	var cm corev1.ConfigMap
	err := r.client.Get(ctx, key, &cm)
	if apierrors.IsNotFound(err) {
		cm = corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "misaki-controller"}},
			Data: map[string]string{ca.RootCertKey: string(bundle)},
		}
		if err = r.client.Create(ctx, &cm); !apierrors.IsAlreadyExists(err) {
			if err == nil {
				r.log.Info("CA bundle published", "namespace", ns.Name)
			}
			return reconcile.Result{}, err
		}
		err = r.reader.Get(ctx, key, &cm) // created meanwhile: update it
	}
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("configmap %s: %w", key, err)
	}
	if bytes.Equal([]byte(cm.Data[ca.RootCertKey]), bundle) {
		return reconcile.Result{}, nil
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[ca.RootCertKey] = string(bundle)
	if err := r.client.Update(ctx, &cm); err != nil {
		return reconcile.Result{}, fmt.Errorf("configmap %s: %w", key, err)
	}
	r.log.Info("CA bundle updated", "namespace", ns.Name)
	return reconcile.Result{}, nil
}
