package conformance

import (
	"strings"
	"testing"
)

func TestCardNumbersAreLuhnValidAndUnique(t *testing.T) {
	g := NewGen()
	for _, bin := range []BIN{{Prefix: "622202", CardType: "debit", Length: 19}, {Prefix: "622588", CardType: "debit", Length: 16}, {Prefix: "436742", CardType: "credit", Length: 16}} {
		seen := map[string]bool{}
		for range 5_000 {
			n := g.CardNumber(bin.Prefix, bin.Length)
			if len(n) != bin.Length || !strings.HasPrefix(n, bin.Prefix) || !LuhnValid(n) {
				t.Fatalf("CardNumber(%s, %d) = %s: wrong shape or check digit", bin.Prefix, bin.Length, mask(n))
			}
			if seen[n] {
				t.Fatalf("CardNumber(%s, %d) repeated %s", bin.Prefix, bin.Length, mask(n))
			}
			seen[n] = true
		}
	}
}

func TestLuhn(t *testing.T) {
	for _, tc := range []struct {
		n  string
		ok bool
	}{
		{"4111111111111111", true},
		{"6222021234567890128", true}, // the sensitive package's test card
		{"4111111111111112", false},
		{"79927398713", true},
		{"79927398710", false},
		{"7992739871x", false},
	} {
		if got := LuhnValid(tc.n); got != tc.ok {
			t.Errorf("LuhnValid(%s) = %v, want %v", tc.n, got, tc.ok)
		}
	}
}

func TestResidentIDs(t *testing.T) {
	// Published examples of GB 11643 check characters.
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"11010519491231002X", true},
		{"440524188001010014", true},
		{"110101199003074515", false}, // check character off by one
		{"11010519491231002x", false},
		{"110105194913310025", false}, // month 13
	} {
		if got := ResidentIDValid(tc.id); got != tc.ok {
			t.Errorf("ResidentIDValid(%s) = %v, want %v", tc.id, got, tc.ok)
		}
	}
	g := NewGen()
	sawX := false
	for range 2_000 {
		id := g.ResidentID()
		if !ResidentIDValid(id) {
			t.Fatalf("ResidentID() = %s…: not valid", id[:6])
		}
		sawX = sawX || id[17] == 'X'
	}
	if !sawX {
		t.Error("2 000 IDs and none with check character X: the check is not computed")
	}
}

func TestPhones(t *testing.T) {
	g := NewGen()
	seen := map[string]bool{}
	for range 5_000 {
		p := g.Phone()
		if len(p) != 11 || p[0] != '1' || p[1] < '3' || p[1] > '9' || strings.Trim(p, "0123456789") != "" {
			t.Fatalf("Phone() = %s: want 1[3-9] and 9 digits", p)
		}
		if seen[p] {
			t.Fatalf("Phone() repeated %s", p)
		}
		seen[p] = true
	}
}
