package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/quickpay/quickpay/api"
	"github.com/quickpay/quickpay/internal/dev/simclient"
	"github.com/quickpay/quickpay/internal/merchants"
	"github.com/quickpay/quickpay/mandate"
	"github.com/quickpay/quickpay/vaultkeys"
)

// demoCardholders are accounts the dev stack opens at banksim so a newcomer
// can bind a card. Test data: the numbers pass Luhn and GB 11643 but belong
// to nobody.
var demoCardholders = []simclient.Account{
	{BankCode: "ICBC", CardNumber: "6222029015443424642", CardType: "debit", HolderName: "张三",
		IDNumber: "110105199003070017", Phone: "13800138001", Balance: 5_000_000},
	{BankCode: "CCB", CardNumber: "6217005164576002045", CardType: "debit", HolderName: "李四",
		IDNumber: "310115198511200020", Phone: "13900139002", Balance: 2_000_000},
	{BankCode: "CMB", CardNumber: "6225888347075404", CardType: "debit", HolderName: "王五",
		IDNumber: "440304199206150034", Phone: "13700137003", Balance: 1_000_000},
	{BankCode: "CMB", CardNumber: "4392251110366298", CardType: "credit", HolderName: "欧阳·娜娜",
		IDNumber: "510107198808080047", Phone: "15800158004", Balance: 3_000_000, Expiry: "1230", CVV2: "123"},
}

// setupBanks gives every simulated bank the platform's credentials (an HMAC
// secret, or the public half of the HSM key qp-bank-<code>) and, given
// notifyTo's option, the URL the bank posts its notices to (an agreement
// the cardholder ended there); stores the channel settings where serve
// reads them (Vault, secret/quickpay/banks/<code>, see
// bankadapters/channels); and opens the demo cardholders' accounts.
func setupBanks(ctx context.Context, banksimURL string, secrets *vaultkeys.Secrets, hsm *vaultkeys.HSM, demo bool,
	opts ...simclient.ConnectOption) error {
	sim := simclient.NewClient(banksimURL)
	channels, err := sim.ConnectPlatform(ctx, func(code string) string { return "QP" + code + "0001" }, hsm.BankPublicKeyPEM,
		opts...)
	if err != nil {
		return fmt.Errorf("banksim: %w", err)
	}
	for code, ch := range channels {
		if err := secrets.Write(ctx, "secret/quickpay/banks/"+code, ch); err != nil {
			return err
		}
	}
	if !demo {
		return nil
	}
	for _, a := range demoCardholders {
		if err := sim.PutAccount(ctx, a); err != nil {
			return fmt.Errorf("open demo account at %s: %w", a.BankCode, err)
		}
	}
	return nil
}

// notifyTo registers, at every simulated bank, the callback route of the
// quickpay served at publicURL (QUICKPAY_PUBLIC_URL, http://<listen> by
// default) as the platform's notify_url: the bank posts its notices there,
// as it posts async results to the URL each charge names.
func notifyTo(publicURL string) simclient.ConnectOption {
	return simclient.WithNotifyURL(func(code string) string { return api.CallbackURL(publicURL, code) })
}

// printDemoCardholders shows the four elements of the demo cards.
func printDemoCardholders() {
	fmt.Println("\nDemo cardholders at banksim (test data), ready to bind:")
	fmt.Printf("  %-5s %-6s %-20s %-19s %-12s %-10s %s\n", "BANK", "TYPE", "CARD NUMBER", "ID NUMBER", "PHONE", "EXPIRY/CVV2", "NAME")
	for _, c := range demoCardholders {
		extra := "-"
		if c.Expiry != "" {
			extra = c.Expiry + "/" + c.CVV2
		}
		fmt.Printf("  %-5s %-6s %-20s %-19s %-12s %-10s %s\n", c.BankCode, c.CardType, c.CardNumber, c.IDNumber, c.Phone, extra, c.HolderName)
	}
}

// cmdBanks: `quickpay banks connect-sim [--demo]` connects the platform to a
// banksim (credentials at each bank, channel settings in Vault), for stacks
// that do not run `quickpay dev` (docker-compose).
func cmdBanks(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "connect-sim" {
		return fmt.Errorf("usage: quickpay banks connect-sim [--demo]")
	}
	var c config
	fs := newFlags("banks connect-sim", &c)
	demo := fs.Bool("demo", false, "also open the demo cardholders' accounts")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if c.BanksimURL == "" {
		return fmt.Errorf("no banksim: set QUICKPAY_BANKSIM_URL or --banksim-url")
	}
	d, err := c.open(ctx, c.logger(), false)
	if err != nil {
		return err
	}
	defer d.close()
	publicURL := c.PublicURL
	if publicURL == "" {
		publicURL = "http://" + c.Listen
	}
	if err := setupBanks(ctx, c.BanksimURL, d.secrets, d.hsm, *demo, notifyTo(publicURL)); err != nil {
		return err
	}
	fmt.Printf("banks connected: channel settings in vault at secret/quickpay/banks/<code>; bank notices go to %s\n",
		publicURL)
	return nil
}

// demoMerchant is the merchant `quickpay dev` creates once and keeps in the
// state dir (dev only), so every run prints the same credentials.
type demoMerchant struct {
	MerchantID   string `json:"merchant_id"`
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
}

func ensureDemoMerchant(ctx context.Context, path string, pool *pgxpool.Pool) (demoMerchant, error) {
	store, err := merchants.NewStore(merchants.Config{Pool: pool})
	if err != nil {
		return demoMerchant{}, err
	}
	var dm demoMerchant
	if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &dm) == nil {
		if _, err := store.Authenticate(ctx, dm.ClientID, dm.ClientSecret); err == nil {
			return dm, nil
		}
	}
	m, secret, err := store.Create(merchants.WithActor(ctx, "dev"), "Demo P2P platform", []string{merchants.ScopeBind, merchants.ScopeWithhold})
	if err != nil {
		return demoMerchant{}, err
	}
	dm = demoMerchant{MerchantID: m.ID, ClientID: m.ClientID, ClientSecret: secret}
	b, _ := json.Marshal(dm)
	return dm, os.WriteFile(path, b, 0o600)
}

// printWalkthrough shows a copy-paste binding of the first demo card.
func printWalkthrough(baseURL, banksimURL string, dm demoMerchant) {
	c := demoCardholders[0]
	today := mandate.Schedule{}.DateAt(time.Now())
	fmt.Printf(`
Demo merchant %[3]s (client id %[4]s, secret in .quickpay/env). Bind %[5]s's card:

  TOKEN=$(curl -s %[1]s/v1/oauth/token -H 'Content-Type: application/json' \
    -d '{"grant_type":"client_credentials","client_id":"%[4]s","client_secret":"%[6]s"}' \
    | sed -E 's/.*"access_token":"([^"]+)".*/\1/')

  curl -s %[1]s/v1/bindings -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -H "Idempotency-Key: demo-$RANDOM" \
    -d '{"external_user_id":"demo-user-1","holder_name":"%[5]s","id_number":"%[7]s","card_number":"%[8]s","phone":"%[9]s"}'

  # the bank's SMS code for that phone (banksim's inbox):
  curl -s '%[2]s/sim/sms?phone=%[9]s'

  curl -s %[1]s/v1/bindings/<binding id>/confirm -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d '{"otp":"<code>"}'

Then a monthly withholding mandate on the bound card, charged from today:

  curl -s %[1]s/v1/mandates -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -H "Idempotency-Key: demo-$RANDOM" \
    -d '{"card_id":"<card id>","reference":"water-001","description":"水费","amount_type":"fixed","amount":1999,"currency":"CNY","schedule":{"interval":"month","day_of_month":%[10]d,"start_date":"%[11]s"}}'

  # quickpay's consent code, sent through the carrier (same inbox):
  curl -s '%[2]s/sim/sms?phone=%[9]s'

  curl -s %[1]s/v1/mandates/<mandate id>/confirm -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d '{"otp":"<code>"}'

  go run ./cmd/quickpay charges run-due      # or wait for serve's scheduler (30 s)
  curl -s %[1]s/v1/mandates/<mandate id>/charges -H "Authorization: Bearer $TOKEN"
`, baseURL, banksimURL, dm.MerchantID, dm.ClientID, c.HolderName, dm.ClientSecret, c.IDNumber, c.CardNumber, c.Phone,
		today.Day(), today.Format(time.DateOnly))
}

// demoSessionLink asks the running API for a binding session of the demo
// merchant (its own token, then POST /v1/binding_sessions) and returns the
// hosted page's link, which returns to serve's /readyz when done.
func demoSessionLink(ctx context.Context, baseURL string, dm demoMerchant) (string, error) {
	post := func(path, token, idemKey string, body, out any) error {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+path, bytes.NewReader(b))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if idemKey != "" {
			req.Header.Set("Idempotency-Key", idemKey)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("POST %s: HTTP %d", path, resp.StatusCode)
		}
		return json.NewDecoder(resp.Body).Decode(out)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := post("/v1/oauth/token", "", "", map[string]string{"grant_type": "client_credentials",
		"client_id": dm.ClientID, "client_secret": dm.ClientSecret}, &tok); err != nil {
		return "", err
	}
	var sess struct {
		URL string `json:"url"`
	}
	if err := post("/v1/binding_sessions", tok.AccessToken, fmt.Sprintf("demo-session-%d", time.Now().UnixNano()),
		map[string]string{"external_user_id": "demo-web-user", "return_url": baseURL + "/readyz"}, &sess); err != nil {
		return "", err
	}
	return sess.URL, nil
}
