package bankadapters

import (
	"errors"
	"sort"
	"strings"

	"github.com/quickpay/quickpay/internal/sensitive"
)

// CardType is debit or credit.
type CardType string

// Card types.
const (
	Debit  CardType = "debit"
	Credit CardType = "credit"
)

// BIN is one row of the BIN table: card numbers starting with Prefix and
// Length digits long belong to the bank.
type BIN struct {
	Prefix   string
	Length   int
	BankCode string
	BankName string
	CardType CardType
}

// CardInfo is where a card number routes.
type CardInfo struct {
	BankCode string
	BankName string
	CardType CardType
}

// ErrCardUnsupported: no bank quickpay is connected to issues this card.
var ErrCardUnsupported = errors.New("card not supported: no connected bank issues this BIN")

// Router routes card numbers by the longest matching BIN prefix.
type Router struct{ bins []BIN }

// NewRouter returns a router over bins.
func NewRouter(bins []BIN) *Router {
	b := append([]BIN(nil), bins...)
	sort.SliceStable(b, func(i, j int) bool { return len(b[i].Prefix) > len(b[j].Prefix) })
	return &Router{bins: b}
}

// Route returns the bank and card type of pan, or ErrCardUnsupported.
func (r *Router) Route(pan sensitive.PAN) (CardInfo, error) {
	s := pan.Reveal()
	for _, b := range r.bins {
		if strings.HasPrefix(s, b.Prefix) && (b.Length == 0 || len(s) == b.Length) {
			return CardInfo{BankCode: b.BankCode, BankName: b.BankName, CardType: b.CardType}, nil
		}
	}
	return CardInfo{}, ErrCardUnsupported
}

// DefaultBINs are the BINs of the banks quickpay connects to (banksim's).
func DefaultBINs() []BIN {
	return []BIN{
		{Prefix: "622202", Length: 19, BankCode: "ICBC", BankName: "中国工商银行", CardType: Debit},
		{Prefix: "427020", Length: 16, BankCode: "ICBC", BankName: "中国工商银行", CardType: Credit},
		{Prefix: "621700", Length: 19, BankCode: "CCB", BankName: "中国建设银行", CardType: Debit},
		{Prefix: "436742", Length: 16, BankCode: "CCB", BankName: "中国建设银行", CardType: Credit},
		{Prefix: "622588", Length: 16, BankCode: "CMB", BankName: "招商银行", CardType: Debit},
		{Prefix: "439225", Length: 16, BankCode: "CMB", BankName: "招商银行", CardType: Credit},
	}
}
