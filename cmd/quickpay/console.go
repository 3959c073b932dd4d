package main

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/quickpay/quickpay/api"
)

// consoleHandler builds the operator console (package api/console) over d,
// served by serve on --console-listen.
func (c *config) consoleHandler(ctx context.Context, d *deps, cfg api.Config, log *slog.Logger) (http.Handler, error) {
	return http.NotFoundHandler(), nil
}
