package idempotency

// SetOnWait makes s call f whenever a request starts waiting for an
// in-flight key, so a test can release the first request only once the
// others are really waiting on it.
func SetOnWait(s *Store, f func()) { s.onWait = f }
