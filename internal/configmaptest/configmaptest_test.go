package configmaptest

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLayout(t *testing.T) {
	tests := []struct {
		name string
		link string // the symlink the pod sees, relative to the volume
		want string // where it points
	}{
		{"config.yaml", "config.yaml", "..data/config.yaml"},
		{"conf/config.yaml", "conf", "..data/conf"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := New(t, tc.name, "a: 1\n")
			vol := d.dir
			for _, content := range []string{"a: 1\n", "a: 2\n", "a: 3\n"} {
				if content != "a: 1\n" {
					d.Update(content)
				}
				if got, err := os.ReadFile(d.Path()); err != nil || string(got) != content {
					t.Fatalf("read %s = %q, %v; want %q", d.Path(), got, err, content)
				}
				if got, err := os.Readlink(filepath.Join(vol, tc.link)); err != nil || got != tc.want {
					t.Errorf("readlink %s = %q, %v; want %q", tc.link, got, err, tc.want)
				}
				// The kubelet keeps only the version in use.
				versions, err := filepath.Glob(filepath.Join(vol, "..2*"))
				if err != nil || len(versions) != 1 {
					t.Errorf("timestamped directories = %v, %v; want one", versions, err)
				}
			}
		})
	}
}
