package main

import (
	"context"
	"errors"
)

// cmdOperators manages the operator console's staff (internal/operators).
func cmdOperators(ctx context.Context, args []string) error {
	return errors.New("usage: quickpay operators create|list|disable|reset")
}
