package podrunner

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestArgv(t *testing.T) {
	img := Image{Entrypoint: []string{"/bin/echo-app", "-v"}, Cmd: []string{"serve"}}
	env := map[string]string{"PORT": "8080"}
	tests := []struct {
		name          string
		command, args []string
		want          string
	}{
		{name: "image only", want: "/bin/echo-app -v serve"},
		{name: "args replace CMD", args: []string{"listen", "$(PORT)"}, want: "/bin/echo-app -v listen 8080"},
		{name: "command replaces both", command: []string{"/bin/sh", "-c"}, want: "/bin/sh -c"},
		{name: "command and args", command: []string{"/bin/sh"}, args: []string{"-c", "echo $(PORT)"}, want: "/bin/sh -c echo 8080"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := argv(img, &corev1.Container{Name: "c", Command: tt.command, Args: tt.args}, env)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, " ") != tt.want {
				t.Errorf("argv = %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := argv(Image{}, &corev1.Container{Name: "c"}, env); err == nil {
		t.Errorf("argv with no program: no error")
	}
}
