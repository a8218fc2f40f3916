//go:build !linux

package proxy

import "syscall"

// readNow reads from a non-blocking socket; see sys_linux.go.
func readNow(fd uintptr, p []byte) (int, error) { return syscall.Read(int(fd), p) }

// writeNow writes to a non-blocking socket; see sys_linux.go.
func writeNow(fd uintptr, p []byte) (int, error) { return syscall.Write(int(fd), p) }
