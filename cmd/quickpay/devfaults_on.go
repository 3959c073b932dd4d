//go:build devfaults

package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/quickpay/quickpay/vaultkeys"
)

// startDevFaults, in a binary built with -tags devfaults only (the soak's,
// cmd/qpsoak), breaks serve's HSM sessions when asked from outside:
//
//	SIGUSR1  C_CloseAllSessions on the pool's slot (vaultkeys.HSM.DevCloseAllSessions)
//	SIGUSR2  C_Logout (vaultkeys.HSM.DevLogout)
//
// The pool must then discard what broke and log in again. Each fault ends
// with a log line "dev fault fired" (fault, n, err) that the soak waits for.
// A normal build has none of this (devfaults.go): there SIGUSR1 and SIGUSR2
// keep their default action.
func startDevFaults(ctx context.Context, hsm *vaultkeys.HSM, log *slog.Logger) {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2)
	log.Warn("dev faults armed: SIGUSR1 closes all HSM sessions, SIGUSR2 logs the HSM out (a -tags devfaults build, never for production)")
	go func() {
		defer signal.Stop(sig)
		n := 0
		for {
			select {
			case <-ctx.Done():
				return
			case s := <-sig:
				n++
				fault, fire := "close_all_sessions", hsm.DevCloseAllSessions
				if s == syscall.SIGUSR2 {
					fault, fire = "logout", hsm.DevLogout
				}
				fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				err := fire(fctx)
				cancel()
				if err != nil {
					log.Error("dev fault fired", "fault", fault, "n", n, "err", err)
					continue
				}
				log.Warn("dev fault fired", "fault", fault, "n", n)
			}
		}
	}()
}
