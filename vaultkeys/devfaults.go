//go:build devfaults

package vaultkeys

import (
	"context"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// The dev-only HSM faults below exist only in binaries built with
// -tags devfaults (the soak's quickpay, cmd/qpsoak; the tests that provoke
// them). They break the pool's sessions from inside the process, since
// PKCS#11 sessions and login belong to it: the pool must notice, discard
// what broke and log in again (package doc, "Sessions and concurrency").
//
// Each first takes every session slot and the keeper, so no operation runs
// while the fault fires: C_CloseAllSessions while another thread is inside
// a call on one of those sessions is a use-after-free in SoftHSM2
// (TestSessionsRecoverAfterCloseAllSessions). A process loses its sessions
// only through its own call, so this is the fault as it happens.

// DevCloseAllSessions closes every session of the process on the pool's
// slot (C_CloseAllSessions): the pool's idle sessions, the keeper with its
// working copies, and with the last session the login.
func (h *HSM) DevCloseAllSessions(ctx context.Context) error {
	resume, err := h.devPause(ctx)
	if err != nil {
		return err
	}
	defer resume()
	if err := h.p.CloseAllSessions(h.slot); err != nil {
		return fmt.Errorf("hsm: dev fault: close all sessions: %w", err)
	}
	return nil
}

// DevLogout logs the process out of the token (C_Logout) while the pool's
// sessions stay open: they fall back to public sessions, and the private
// objects' handles, the keys', go stale.
func (h *HSM) DevLogout(ctx context.Context) error {
	lo, ok := h.p.(interface {
		Logout(pkcs11.SessionHandle) error
	})
	if !ok {
		return errors.New("hsm: dev fault: this PKCS#11 interface has no C_Logout")
	}
	resume, err := h.devPause(ctx)
	if err != nil {
		return err
	}
	defer resume()
	s, err := h.p.OpenSession(h.slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		return fmt.Errorf("hsm: dev fault: open session: %w", err)
	}
	defer func() { _ = h.p.CloseSession(s) }()
	if err := lo.Logout(s); err != nil {
		return fmt.Errorf("hsm: dev fault: logout: %w", err)
	}
	return nil
}

// devPause waits until no operation holds a session (taking every slot of
// the pool) and holds the keeper; resume gives them back.
func (h *HSM) devPause(ctx context.Context) (resume func(), err error) {
	taken := 0
	giveBack := func() {
		for range taken {
			<-h.sem
		}
	}
	for taken < cap(h.sem) {
		select {
		case h.sem <- struct{}{}:
			taken++
		case <-ctx.Done():
			giveBack()
			return nil, fmt.Errorf("hsm: dev fault: waiting for the pool to pause: %w", ctx.Err())
		}
	}
	h.keeperMu.Lock()
	return func() {
		h.keeperMu.Unlock()
		giveBack()
	}, nil
}
