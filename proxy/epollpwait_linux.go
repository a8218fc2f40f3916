//go:build linux && (arm64 || riscv64 || loong64)

package proxy

import "syscall"

// sysEpollWait is the call a loop waits for its events with: epoll_pwait,
// as these architectures have no epoll_wait. Called with no signal mask,
// it waits as epoll_wait does.
const sysEpollWait = syscall.SYS_EPOLL_PWAIT
