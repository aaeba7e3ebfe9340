package main

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// exitWithParent asks the kernel to send this process SIGTERM when its
// parent exits. Under "go run", the parent is the go command, which dies of
// a SIGTERM without passing it on: "go run ./cmd/linger serve &" followed by
// "kill $!" would otherwise leave the server running.
func exitWithParent() error {
	ppid := os.Getppid()
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0, 0, 0); err != nil {
		return os.NewSyscallError("prctl PR_SET_PDEATHSIG", err)
	}
	// The parent may have died before the request took effect.
	if os.Getppid() != ppid {
		return errors.New("the parent process has exited")
	}
	return nil
}
