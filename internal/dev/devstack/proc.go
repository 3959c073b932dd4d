package devstack

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Proc is a child process of the local stack. It runs in its own process
// group, so a terminal's Ctrl-C reaches only `quickpay dev`, which then stops
// its children in order; and it gets SIGTERM if its parent dies.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// StartProc starts cmd and returns the first line it prints on stdout, which
// every component of the stack uses to announce where it listens. The rest
// of stdout and all of stderr go to this process's stderr.
func StartProc(name string, cmd *exec.Cmd, timeout time.Duration) (*Proc, string, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	p, err := StartBackground(name, cmd)
	if err != nil {
		return nil, "", err
	}
	first := make(chan string, 1)
	go func() {
		r := bufio.NewReader(out)
		line, _ := r.ReadString('\n')
		first <- line
		_, _ = io.Copy(os.Stderr, r)
	}()

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case line := <-first:
		if line == "" {
			<-p.done
			return nil, "", fmt.Errorf("%s exited before it announced itself: %v", name, p.err)
		}
		return p, line, nil
	case <-p.done:
		return nil, "", fmt.Errorf("%s exited at start: %v", name, p.err)
	case <-timer.C:
		_ = p.Stop()
		return nil, "", fmt.Errorf("%s did not start within %s", name, timeout)
	}
}

// StartBackground starts cmd as a child of the stack without waiting for
// anything. Unset stdout and stderr go to this process's stderr.
func StartBackground(name string, cmd *exec.Cmd) (*Proc, error) {
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

// Stop sends SIGTERM and waits up to 20s before killing.
func (p *Proc) Stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop on SIGTERM; killed", p.Name)
	}
	return nil
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the process's exit error, once Done is closed.
func (p *Proc) Err() error { return p.err }
