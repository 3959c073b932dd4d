package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/quickpay/quickpay/vaultkeys"
)

// demoCardholder is an account the dev stack opens at banksim so a newcomer
// can bind a card. Test data: the numbers pass Luhn and GB 11643 but belong
// to nobody.
type demoCardholder struct {
	BankCode   string `json:"bank_code"`
	CardNumber string `json:"card_number"`
	CardType   string `json:"card_type"`
	HolderName string `json:"holder_name"`
	IDNumber   string `json:"id_number"`
	Phone      string `json:"phone"`
	Balance    int64  `json:"balance"`
	Expiry     string `json:"expiry,omitempty"`
	CVV2       string `json:"cvv2,omitempty"`
}

var demoCardholders = []demoCardholder{
	{"ICBC", "6222029015443424642", "debit", "张三", "110105199003070017", "13800138001", 5_000_000, "", ""},
	{"CCB", "6217005164576002045", "debit", "李四", "310115198511200020", "13900139002", 2_000_000, "", ""},
	{"CMB", "6225888347075404", "debit", "王五", "440304199206150034", "13700137003", 1_000_000, "", ""},
	{"CMB", "4392251110366298", "credit", "欧阳·娜娜", "510107198808080047", "15800158004", 3_000_000, "1230", "123"},
}

// setupBanks gives every simulated bank the platform's credentials (an HMAC
// secret, or the public half of the HSM key qp-bank-<code>), stores the
// channel settings where serve reads them (Vault, secret/quickpay/banks/<code>),
// and opens the demo cardholders' accounts.
func setupBanks(ctx context.Context, banksimURL string, secrets *vaultkeys.Secrets, hsm *vaultkeys.HSM) error {
	var banks []struct {
		Code         string `json:"code"`
		Dialect      string `json:"dialect"`
		PublicKeyPEM string `json:"public_key_pem"`
	}
	if err := simCall(ctx, http.MethodGet, banksimURL+"/sim/banks", nil, &banks); err != nil {
		return err
	}
	for _, b := range banks {
		merchant := map[string]any{"bank_code": b.Code, "merchant_no": "QP" + b.Code + "0001"}
		channel := map[string]any{"dialect": b.Dialect, "merchant_no": merchant["merchant_no"]}
		switch b.Dialect {
		case "json-hmac":
			secret := make([]byte, 32)
			_, _ = rand.Read(secret)
			merchant["hmac_secret"] = hex.EncodeToString(secret)
			channel["hmac_secret"] = merchant["hmac_secret"]
		case "form-rsa":
			if _, err := hsm.EnsureBankKey(ctx, b.Code); err != nil {
				return err
			}
			pub, err := hsm.BankSigner(b.Code).PublicKeyPEM(ctx)
			if err != nil {
				return err
			}
			merchant["public_key_pem"] = pub
			channel["bank_public_key_pem"] = b.PublicKeyPEM
		default:
			return fmt.Errorf("banksim bank %s has unknown dialect %q", b.Code, b.Dialect)
		}
		if err := simCall(ctx, http.MethodPost, banksimURL+"/sim/merchants", merchant, nil); err != nil {
			return err
		}
		if err := secrets.Write(ctx, "secret/quickpay/banks/"+b.Code, channel); err != nil {
			return err
		}
	}
	for _, c := range demoCardholders {
		if err := simCall(ctx, http.MethodPost, banksimURL+"/sim/accounts", c, nil); err != nil {
			return fmt.Errorf("open demo account: %w", err)
		}
	}
	return nil
}

// simCall calls banksim's test-control API.
func simCall(ctx context.Context, method, url string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("banksim: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("banksim %s %s: HTTP %d: %s", method, url[strings.Index(url, "/sim"):], resp.StatusCode, msg)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// printDemoCardholders shows the four elements of the demo cards.
func printDemoCardholders() {
	fmt.Println("\nDemo cardholders at banksim (test data), ready to bind:")
	fmt.Printf("  %-5s %-6s %-20s %-12s %-19s %-12s %s\n", "BANK", "TYPE", "CARD NUMBER", "NAME", "ID NUMBER", "PHONE", "EXPIRY/CVV2")
	for _, c := range demoCardholders {
		extra := ""
		if c.Expiry != "" {
			extra = c.Expiry + " / " + c.CVV2
		}
		fmt.Printf("  %-5s %-6s %-20s %-12s %-19s %-12s %s\n", c.BankCode, c.CardType, c.CardNumber, c.HolderName, c.IDNumber, c.Phone, extra)
	}
}
