package kedatest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// kedaModule is the Go module whose config/crd the CRDs come from; its
// version is the one tools/keda/go.mod requires, the same the binaries
// are built from.
const kedaModule = "github.com/kedacore/keda/v2"

// moduleDir returns the directory of KEDA's module source in the Go module
// cache, as `go list -m` finds it from the tools module in toolsDir.
func moduleDir(ctx context.Context, toolsDir string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", kedaModule)
	cmd.Dir = toolsDir
	// The tools module alone decides the version: no workspace, no vendor.
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("find KEDA's module source (run `make keda`, which downloads it): go list -m %s in %s: %w: %s",
			kedaModule, toolsDir, err, strings.TrimSpace(stderr.String()))
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", fmt.Errorf("%s (required by %s/go.mod) is not in the Go module cache: run `make keda`, which downloads it", kedaModule, toolsDir)
	}
	return dir, nil
}

// crdKustomization is the part of config/crd/kustomization.yaml that says
// which CRD files make KEDA's CRDs and which JSON patches apply to them.
type crdKustomization struct {
	Resources []string `json:"resources"`
	Patches   []struct {
		Path   string `json:"path"`
		Target struct {
			Kind string `json:"kind"`
			Name string `json:"name"`
		} `json:"target"`
	} `json:"patches"`
}

// readCRDs reads KEDA's CustomResourceDefinitions from the module source in
// dir as `kustomize build config/crd` would make them: the files its
// kustomization names, with its JSON patches applied.
func readCRDs(dir string) ([]*unstructured.Unstructured, error) {
	crdDir := filepath.Join(dir, "config", "crd")
	kfile := filepath.Join(crdDir, "kustomization.yaml")
	b, err := os.ReadFile(kfile)
	if err != nil {
		return nil, fmt.Errorf("read KEDA's CRD kustomization: %w", err)
	}
	var k crdKustomization
	if err := yaml.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("parse %s: %w", kfile, err)
	}
	if len(k.Resources) == 0 {
		return nil, fmt.Errorf("%s names no resources", kfile)
	}
	var crds []*unstructured.Unstructured
	byName := map[string]int{}
	for _, res := range k.Resources {
		path := filepath.Join(crdDir, res)
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read KEDA CRD: %w", err)
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(b, &obj.Object); err != nil {
			return nil, fmt.Errorf("parse %s: %w", path, err)
		}
		if obj.GetKind() != "CustomResourceDefinition" {
			return nil, fmt.Errorf("%s is a %q, want a CustomResourceDefinition", path, obj.GetKind())
		}
		byName[obj.GetName()] = len(crds)
		crds = append(crds, obj)
	}
	for _, p := range k.Patches {
		i, ok := byName[p.Target.Name]
		if p.Target.Kind != "CustomResourceDefinition" || !ok {
			return nil, fmt.Errorf("%s: patch %s targets %s %q, not one of its CRDs", kfile, p.Path, p.Target.Kind, p.Target.Name)
		}
		path := filepath.Join(crdDir, p.Path)
		if err := applyPatch(crds[i], path); err != nil {
			return nil, err
		}
	}
	return crds, nil
}

// applyPatch applies the JSON patch (RFC 6902, written in YAML) in path to obj.
func applyPatch(obj *unstructured.Unstructured, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read KEDA CRD patch: %w", err)
	}
	ops, err := yaml.YAMLToJSON(b)
	if err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	patch, err := jsonpatch.DecodePatch(ops)
	if err != nil {
		return fmt.Errorf("decode JSON patch %s: %w", path, err)
	}
	doc, err := obj.MarshalJSON()
	if err != nil {
		return fmt.Errorf("encode CRD %s: %w", obj.GetName(), err)
	}
	patched, err := patch.Apply(doc)
	if err != nil {
		return fmt.Errorf("apply %s to CRD %s: %w", path, obj.GetName(), err)
	}
	if err := obj.UnmarshalJSON(patched); err != nil {
		return fmt.Errorf("decode patched CRD %s: %w", obj.GetName(), err)
	}
	return nil
}
