package main

import (
	"context"
	"fmt"

	"github.com/quickpay/quickpay/cmd/banksim/simclient"
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
// secret, or the public half of the HSM key qp-bank-<code>), stores the
// channel settings where serve reads them (Vault, secret/quickpay/banks/<code>,
// see bankadapters/channels), and opens the demo cardholders' accounts.
func setupBanks(ctx context.Context, banksimURL string, secrets *vaultkeys.Secrets, hsm *vaultkeys.HSM) error {
	sim := simclient.NewClient(banksimURL)
	channels, err := sim.ConnectPlatform(ctx, func(code string) string { return "QP" + code + "0001" }, hsm.BankPublicKeyPEM)
	if err != nil {
		return fmt.Errorf("banksim: %w", err)
	}
	for code, ch := range channels {
		if err := secrets.Write(ctx, "secret/quickpay/banks/"+code, ch); err != nil {
			return err
		}
	}
	for _, a := range demoCardholders {
		if err := sim.PutAccount(ctx, a); err != nil {
			return fmt.Errorf("open demo account at %s: %w", a.BankCode, err)
		}
	}
	return nil
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
