package conformance

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Gen makes test data that looks real to a bank: Luhn-valid card numbers,
// resident ID numbers with their GB 11643 check character, mainland mobile
// numbers, and order and request numbers.
//
// Every value a Gen returns is unique among that Gen's values of the same
// kind and shape (card numbers per BIN and length, phones, order numbers):
// the n-th call maps n through a bijection of the free digits, offset by a
// random base, so two Gens (two test processes against one banksim) collide
// only by chance. A Gen is safe for concurrent use.
type Gen struct {
	base uint64 // random offset of every sequence
	n    atomic.Uint64
}

// NewGen returns a generator with a random base.
func NewGen() *Gen {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &Gen{base: binary.BigEndian.Uint64(b[:]) >> 1}
}

// stride is coprime with 10, so i ↦ (base + i·stride) mod 10^k is a
// bijection on k-digit numbers for every k.
const stride = 7_919

// unique returns the next k-digit (zero-padded) value of g's sequence.
func (g *Gen) unique(k int) string {
	m := uint64(1)
	for range k {
		m *= 10
	}
	i := g.n.Add(1)
	v := (g.base%m + (i%m)*stride%m) % m
	return fmt.Sprintf("%0*d", k, v)
}

// CardNumber returns a Luhn-valid card number of length digits starting
// with prefix. It panics if the prefix leaves no room for a serial number
// (a programming error in the test).
func (g *Gen) CardNumber(prefix string, length int) string {
	free := length - len(prefix) - 1
	if free < 1 || free > 18 {
		panic(fmt.Sprintf("conformance: card prefix of %d digits for length %d", len(prefix), length))
	}
	body := prefix + g.unique(free)
	return body + string(rune('0'+luhnCheckDigit(body)))
}

// luhnCheckDigit is the digit that makes body+digit pass the Luhn check.
func luhnCheckDigit(body string) int {
	sum := 0
	// Walking from the right of body, the first digit is the one doubled
	// (the check digit will sit to its right).
	for i := len(body) - 1; i >= 0; i-- {
		d := int(body[i] - '0')
		if (len(body)-1-i)%2 == 0 {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return (10 - sum%10) % 10
}

// LuhnValid reports whether number is all digits and passes the Luhn check.
func LuhnValid(number string) bool {
	if len(number) < 2 {
		return false
	}
	for _, c := range number {
		if c < '0' || c > '9' {
			return false
		}
	}
	return luhnCheckDigit(number[:len(number)-1]) == int(number[len(number)-1]-'0')
}

// GB 11643-1999: weights of the 17 leading digits and the check characters
// by the weighted sum mod 11.
var (
	idWeights = [17]int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}
	idChecks  = "10X98765432"
	regions   = []string{"110101", "310104", "440305", "330106", "510107", "420102", "320102", "610113"}
)

// idCheckChar returns the check character of the 17 leading digits.
func idCheckChar(first17 string) byte {
	sum := 0
	for i := range 17 {
		sum += int(first17[i]-'0') * idWeights[i]
	}
	return idChecks[sum%11]
}

// ResidentIDValid reports whether id is 18 characters, 17 digits and the
// right GB 11643 check character, with a real birth date.
func ResidentIDValid(id string) bool {
	if len(id) != 18 {
		return false
	}
	for _, c := range id[:17] {
		if c < '0' || c > '9' {
			return false
		}
	}
	if _, err := time.Parse("20060102", id[6:14]); err != nil {
		return false
	}
	return idCheckChar(id[:17]) == id[17]
}

// ResidentID returns an 18-character resident ID number: a real region
// code, a birth date between 1960 and 2000, a sequence number and the GB
// 11643 check character (which may be 'X').
func (g *Gen) ResidentID() string {
	seq := g.unique(6) // the last 3 digits are the sequence number
	n, _ := strconv.Atoi(seq)
	days := int((g.base + uint64(n)*7) % 14_600) // 40 years
	born := time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, days)
	first17 := regions[n%len(regions)] + born.Format("20060102") + seq[3:]
	return first17 + string(idCheckChar(first17))
}

// Phone returns a mainland mobile number 1[3-9]xxxxxxxxx.
func (g *Gen) Phone() string {
	return "1" + strconv.Itoa(3+int(g.base%7)) + g.unique(9)
}

// OrderNo returns a fresh order (or request) number: prefix, then letters
// and digits only, at most 40 characters.
func (g *Gen) OrderNo(prefix string) string {
	return prefix + strconv.FormatUint(g.base%(1<<40), 36) + g.unique(12)
}

var names = []string{"张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄晓明", "周杰", "吴婷"}

// HolderName returns a Chinese personal name.
func (g *Gen) HolderName() string {
	n, _ := strconv.Atoi(g.unique(2))
	return names[n%len(names)]
}

// Account returns a fresh active account of cardType ("debit" or
// "credit") at bank, with balance fen and banksim's default limits. Credit
// cards get an expiry and CVV2.
func (g *Gen) Account(bank BankInfo, cardType string, balance int64) (Account, error) {
	var bin *BIN
	for i := range bank.BINs {
		if bank.BINs[i].CardType == cardType {
			bin = &bank.BINs[i]
			break
		}
	}
	if bin == nil {
		return Account{}, fmt.Errorf("bank %s issues no %s cards", bank.Code, cardType)
	}
	a := Account{
		BankCode:   bank.Code,
		CardNumber: g.CardNumber(bin.Prefix, bin.Length),
		CardType:   cardType,
		HolderName: g.HolderName(),
		IDNumber:   g.ResidentID(),
		Phone:      g.Phone(),
		Balance:    balance,
	}
	switch cardType {
	case "debit":
	case "credit":
		cvv := g.unique(3)
		a.Expiry, a.CVV2 = "12"+strconv.Itoa(30+int(g.base%9)), cvv
	default:
		return Account{}, fmt.Errorf("card type %q: want debit or credit", cardType)
	}
	return a, nil
}

// mask shows a card number as its first 6 and last 4 digits, for failure
// messages.
func mask(pan string) string {
	if len(pan) < 13 {
		return "****"
	}
	return pan[:6] + strings.Repeat("*", len(pan)-10) + pan[len(pan)-4:]
}
