// Package ids makes the prefixed opaque ids of the API: mem_, bnd_, card_,
// mdt_, chg_, evt_, mch_, … followed by 24 lowercase base32 characters
// (120 random bits).
package ids

import (
	"crypto/rand"
	"encoding/base32"
	"strings"
)

var enc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// New returns prefix + "_" + 24 random characters.
func New(prefix string) string {
	b := make([]byte, 15)
	_, _ = rand.Read(b)
	return prefix + "_" + enc.EncodeToString(b)
}

// Valid reports whether id looks like New(prefix) made it. Handlers check
// it before a lookup so that garbage answers 404 without a query.
func Valid(prefix, id string) bool {
	rest, ok := strings.CutPrefix(id, prefix+"_")
	if !ok || len(rest) != 24 {
		return false
	}
	for _, c := range rest {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}
