package scaleloop_test

import (
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/outrider-sidecar/outrider/loop/scaleloop"
)

// TestLocalOverlayChangesOnlyDurationsAndMinimum renders the shipped KEDA
// overlay and the loop's local overlay of it: the same objects, but for
// the ScaledObject's minimum replicas, polling interval and scale-in
// timings. The local one must have no PodMonitor, whose kind the loop's
// apiserver does not serve; the shipped one has none either (the PodMonitor
// is the Component deploy/k8s/components/podmonitor).
func TestLocalOverlayChangesOnlyDurationsAndMinimum(t *testing.T) {
	shipped, err := scaleloop.Render("../../deploy/k8s/overlays/keda")
	if err != nil {
		t.Fatal(err)
	}
	local, err := scaleloop.Render(overlay)
	if err != nil {
		t.Fatal(err)
	}
	key := func(o *unstructured.Unstructured) string { return o.GetKind() + "/" + o.GetName() }
	byKey := map[string]*unstructured.Unstructured{}
	for _, o := range local {
		byKey[key(o)] = o
	}
	changed := map[string][]string{
		"spec.minReplicaCount":                          {"spec", "minReplicaCount"},
		"spec.pollingInterval":                          {"spec", "pollingInterval"},
		"behavior.scaleDown.stabilizationWindowSeconds": {"spec", "advanced", "horizontalPodAutoscalerConfig", "behavior", "scaleDown", "stabilizationWindowSeconds"},
	}
	// The scale-in policies' periods, and nothing else of them (their
	// type and how many pods each step removes stay the shipped ones).
	withoutPeriods := func(o *unstructured.Unstructured) {
		path := []string{"spec", "advanced", "horizontalPodAutoscalerConfig", "behavior", "scaleDown", "policies"}
		policies, _, _ := unstructured.NestedSlice(o.Object, path...)
		for _, p := range policies {
			if p, ok := p.(map[string]any); ok {
				delete(p, "periodSeconds")
			}
		}
		if err := unstructured.SetNestedSlice(o.Object, policies, path...); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range shipped {
		l, ok := byKey[key(s)]
		delete(byKey, key(s))
		switch {
		case s.GetKind() == "PodMonitor":
			if ok {
				t.Errorf("the local overlay keeps %s, whose kind the loop's apiserver does not serve", key(s))
			}
			continue
		case !ok:
			t.Errorf("the local overlay lacks %s", key(s))
			continue
		case s.GetKind() == "ScaledObject":
			want, got := s.DeepCopy(), l.DeepCopy()
			for _, path := range changed {
				unstructured.RemoveNestedField(want.Object, path...)
				unstructured.RemoveNestedField(got.Object, path...)
			}
			withoutPeriods(want)
			withoutPeriods(got)
			if !reflect.DeepEqual(want.Object, got.Object) {
				t.Errorf("the local overlay changes more of %s than %v and the scale-in policies' periodSeconds:\nshipped %v\nlocal   %v", key(s), changed, want.Object, got.Object)
			}
			if min, _, _ := unstructured.NestedInt64(l.Object, "spec", "minReplicaCount"); min != 1 {
				t.Errorf("local minReplicaCount %d, want 1", min)
			}
			continue
		}
		if !reflect.DeepEqual(s.Object, l.Object) {
			t.Errorf("the local overlay changes %s", key(s))
		}
	}
	for k := range byKey {
		t.Errorf("the local overlay adds %s", k)
	}
}
