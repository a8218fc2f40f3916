//go:build linux && !arm64 && !riscv64 && !loong64

package proxy

import "syscall"

// sysEpollWait is the call a loop waits for its events with: epoll_wait,
// which bench/syscalls.sh counts apart from the epoll_pwait of Go's own
// poller.
const sysEpollWait = syscall.SYS_EPOLL_WAIT
