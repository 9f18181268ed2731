package clustertest

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A Deployment becomes available on a simulated node: the controller
// manager makes its pods, the scheduler places them, kwok runs them.
func TestDeploymentBecomesReady(t *testing.T) {
	c := Start(t)
	c.AddNode(t, "car-node", corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("4Gi")})
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	replicas := int32(2)
	labels := map[string]string{"app": "api"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "apps"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "api", Image: "registry.example.com/api:1",
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m")}},
				}}},
			},
		},
	}
	if _, err := c.Client.AppsV1().Deployments("apps").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.Eventually(t, 90*time.Second, func() error {
		got, err := c.Client.AppsV1().Deployments("apps").Get(ctx, "api", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got.Status.AvailableReplicas != 2 {
			return fmt.Errorf("available %d of 2", got.Status.AvailableReplicas)
		}
		return nil
	})
	// A pod that does not fit stays Pending: capacity is real.
	big := d.DeepCopy()
	big.Name, big.ResourceVersion = "planner", ""
	big.Spec.Selector.MatchLabels = map[string]string{"app": "planner"}
	big.Spec.Template.Labels = map[string]string{"app": "planner"}
	big.Spec.Template.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("4")
	one := int32(1)
	big.Spec.Replicas = &one
	if _, err := c.Client.AppsV1().Deployments("apps").Create(ctx, big, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.Eventually(t, 60*time.Second, func() error {
		pods, err := c.Client.CoreV1().Pods("apps").List(ctx, metav1.ListOptions{LabelSelector: "app=planner"})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodScheduled && cond.Status == corev1.ConditionFalse && cond.Reason == "Unschedulable" {
					return nil
				}
			}
		}
		return fmt.Errorf("no unschedulable planner pod yet (%d pods)", len(pods.Items))
	})
}
