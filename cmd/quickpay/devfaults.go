//go:build !devfaults

package main

import (
	"context"
	"log/slog"

	"github.com/quickpay/quickpay/vaultkeys"
)

// startDevFaults does nothing in a normal build. Built with -tags devfaults
// (the soak's binary only, devfaults_on.go), it lets a test break serve's
// HSM sessions from outside (cmd/qpsoak).
func startDevFaults(context.Context, *vaultkeys.HSM, *slog.Logger) {}
