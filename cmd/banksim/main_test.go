package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "banksim.json")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig(writeConfig(t, `{
		"merchants": [{"bank_code": "ICBC", "merchant_no": "QPICBC0001", "hmac_secret": "0123456789abcdef0123",
			"notify_url": "http://127.0.0.1:8080/callbacks/banks/ICBC"}],
		"accounts": [{"bank_code": "ICBC", "card_number": "6222029015443424642", "card_type": "debit",
			"holder_name": "张三", "id_number": "110105199003070017", "phone": "13800138001", "balance": 500}],
		"async_delay": "50ms"}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AsyncDelay != 50*time.Millisecond || len(cfg.Merchants) != 1 || cfg.Merchants[0].MerchantNo != "QPICBC0001" ||
		cfg.Merchants[0].NotifyURL != "http://127.0.0.1:8080/callbacks/banks/ICBC" ||
		len(cfg.Accounts) != 1 || cfg.Accounts[0].Balance != 500 {
		t.Fatalf("config %+v", cfg)
	}
	if cfg, err := loadConfig(""); err != nil || cfg.AsyncDelay != 0 || cfg.Merchants != nil {
		t.Errorf("no file: %+v, %v", cfg, err)
	}
	for name, body := range map[string]string{
		"unknown field":       `{"merchant": []}`,
		"bad async_delay":     `{"async_delay": "soon"}`,
		"negative delay":      `{"async_delay": "-1s"}`,
		"not JSON":            `merchants: []`,
		"accounts not a list": `{"accounts": {}}`,
	} {
		if _, err := loadConfig(writeConfig(t, body)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := loadConfig(filepath.Join(t.TempDir(), "missing.json")); err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Errorf("missing file: %v", err)
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	t.Parallel()
	// An invalid account in the file stops banksim before it listens.
	p := writeConfig(t, `{"accounts": [{"bank_code": "ICBC", "card_number": "123"}]}`)
	if err := run("127.0.0.1:0", p, false, "info"); err == nil || !strings.Contains(err.Error(), "account 0") {
		t.Errorf("run: %v", err)
	}
	if err := run("127.0.0.1:0", "", false, "loud"); err == nil {
		t.Error("run accepted log level loud")
	}
}
