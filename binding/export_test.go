package binding

import "time"

// SetCrashWindow makes s ask stop, right after each bank call whose answer
// it must apply ("confirm", "resend", "unbind"), whether to stop there as
// a process that died would: the call returns without its second
// transaction, leaving its claim.
func SetCrashWindow(s *Service, stop func(op string) bool) { s.crashWindow = stop }

// ClaimTTL is how long a claim holds.
const ClaimTTL = claimTTL

// SetCallTimeout shortens how long s waits at a bank (its gate's queue
// and the call), so that a test can queue a call past it.
func SetCallTimeout(s *Service, d time.Duration) { s.callTimeout = d }
