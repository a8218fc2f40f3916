package cgroup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Mount table lines of the layouts met in practice.
const (
	v2Mount       = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
	v1MemoryMount = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
	v1CPUMount    = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
	rootfsMount   = "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
)

func TestMemoryLimit(t *testing.T) {
	tests := []struct {
		name      string
		cgroup    string            // /proc/self/cgroup; "" leaves it out
		mountinfo string            // /proc/self/mountinfo
		files     map[string]string // the cgroup files, by path
		want      Limit
		wantErr   string
	}{
		{
			name:      "a container's limit, version 2 in a cgroup namespace",
			cgroup:    "0::/\n",
			mountinfo: rootfsMount + v2Mount,
			files:     map[string]string{"/sys/fs/cgroup/memory.max": "134217728\n"},
			want:      Limit{Bytes: 128 << 20, File: "/sys/fs/cgroup/memory.max"},
		},
		{
			name:      "a systemd unit's MemoryMax, version 2 on the host",
			cgroup:    "0::/system.slice/outrider@echo.service\n",
			mountinfo: rootfsMount + v2Mount,
			files: map[string]string{
				"/sys/fs/cgroup/system.slice/outrider@echo.service/memory.max": "268435456\n",
				"/sys/fs/cgroup/system.slice/memory.max":                       "max\n",
			},
			want: Limit{Bytes: 256 << 20, File: "/sys/fs/cgroup/system.slice/outrider@echo.service/memory.max"},
		},
		{
			name:      "a parent's lower limit holds",
			cgroup:    "0::/kubepods/pod1/c1\n",
			mountinfo: v2Mount,
			files: map[string]string{
				"/sys/fs/cgroup/kubepods/pod1/c1/memory.max": "max\n",
				"/sys/fs/cgroup/kubepods/pod1/memory.max":    "100000000\n",
				"/sys/fs/cgroup/kubepods/memory.max":         "200000000\n",
			},
			want: Limit{Bytes: 100000000, File: "/sys/fs/cgroup/kubepods/pod1/memory.max"},
		},
		{
			name:      "no limit, version 2",
			cgroup:    "0::/user.slice\n",
			mountinfo: v2Mount,
			files:     map[string]string{"/sys/fs/cgroup/user.slice/memory.max": "max\n"},
		},
		{
			name:      "version 1, the container's hierarchy mounted at its root",
			cgroup:    "12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n",
			mountinfo: rootfsMount + strings.Replace(v1MemoryMount, " / /sys", " /docker/abc /sys", 1) + v1CPUMount,
			files:     map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "67108864\n"},
			want:      Limit{Bytes: 64 << 20, File: "/sys/fs/cgroup/memory/memory.limit_in_bytes"},
		},
		{
			name:      "version 1 with no limit: its maximum rounded to a page",
			cgroup:    "4:memory:/\n",
			mountinfo: v1MemoryMount,
			files:     map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"},
		},
		{
			name:      "both versions mounted: version 1's memory controller is in force",
			cgroup:    "4:memory:/job\n0::/job\n",
			mountinfo: v1MemoryMount + strings.Replace(v2Mount, "/sys/fs/cgroup ", "/sys/fs/cgroup/unified ", 1),
			files: map[string]string{
				"/sys/fs/cgroup/memory/job/memory.limit_in_bytes": "33554432\n",
				"/sys/fs/cgroup/unified/job/memory.max":           "1000\n",
			},
			want: Limit{Bytes: 32 << 20, File: "/sys/fs/cgroup/memory/job/memory.limit_in_bytes"},
		},
		{
			name:      "a mount point with a space",
			cgroup:    "0::/\n",
			mountinfo: `30 23 0:26 / /mnt/c\040g rw - cgroup2 cgroup2 rw` + "\n",
			files:     map[string]string{"/mnt/c g/memory.max": "1048576\n"},
			want:      Limit{Bytes: 1 << 20, File: "/mnt/c g/memory.max"},
		},
		{
			name:      "a cgroup the namespace does not show: the mount point's",
			cgroup:    "0::/../../other\n",
			mountinfo: v2Mount,
			files:     map[string]string{"/sys/fs/cgroup/memory.max": "4194304\n"},
			want:      Limit{Bytes: 4 << 20, File: "/sys/fs/cgroup/memory.max"},
		},
		{
			name:      "no cgroup file system mounted",
			cgroup:    "0::/\n",
			mountinfo: rootfsMount,
		},
		{
			name: "no /proc",
		},
		{
			name:      "a limit file that is not a number",
			cgroup:    "0::/\n",
			mountinfo: v2Mount,
			files:     map[string]string{"/sys/fs/cgroup/memory.max": "lots\n"},
			wantErr:   `/sys/fs/cgroup/memory.max: want a number of bytes or "max", got "lots"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			files := map[string]string{}
			if tc.cgroup != "" {
				// /proc/self links to the process's own directory.
				files["/proc/1/cgroup"] = tc.cgroup
				files["/proc/1/mountinfo"] = tc.mountinfo
			}
			for p, s := range tc.files {
				files[p] = s
			}
			for p, s := range files {
				f := filepath.Join(root, p)
				if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(f, []byte(s), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tc.cgroup != "" {
				if err := os.Symlink("1", filepath.Join(root, "proc/self")); err != nil {
					t.Fatal(err)
				}
			}
			got, err := MemoryLimit(root)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("MemoryLimit: got %+v, %v; want an error containing %q", got, err, tc.wantErr)
				}
			case err != nil:
				t.Errorf("MemoryLimit: %v", err)
			case got != tc.want:
				t.Errorf("MemoryLimit = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestMemoryLimitHere reads this machine's own: whatever it is, it must be
// read without an error.
func TestMemoryLimitHere(t *testing.T) {
	l, err := MemoryLimit("/")
	if err != nil {
		t.Fatalf("MemoryLimit(/): %v", err)
	}
	if (l.Bytes == 0) != (l.File == "") {
		t.Errorf("MemoryLimit(/) = %+v: a limit must name its file, and no limit none", l)
	}
	t.Logf("memory limit here: %+v", l)
}
