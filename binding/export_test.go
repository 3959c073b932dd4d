package binding

// SetCrashWindow makes s ask stop, right after each bank call whose answer
// it must apply ("confirm", "resend", "unbind"), whether to stop there as
// a process that died would: the call returns without its second
// transaction, leaving its claim.
func SetCrashWindow(s *Service, stop func(op string) bool) { s.crashWindow = stop }

// ClaimTTL is how long a claim holds.
const ClaimTTL = claimTTL
