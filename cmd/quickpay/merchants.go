package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/quickpay/quickpay/api"
	"github.com/quickpay/quickpay/internal/db"
	"github.com/quickpay/quickpay/internal/merchants"
)

const merchantsUsage = `usage: quickpay merchants create --name NAME [--scopes bind,withhold] [--rps N] [--json]
       quickpay merchants retry-days --merchant ID --days 1,3,5
       quickpay merchants set-rps --merchant ID --rps N   (0: no ceiling)`

func cmdMerchants(ctx context.Context, args []string) error {
	return runMerchants(ctx, args, os.Stdout)
}

// createdMerchant is what `merchants create --json` prints: exactly these
// three keys.
type createdMerchant struct {
	MerchantID   string `json:"merchant_id"`
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
}

// runMerchants runs `quickpay merchants …`, writing its answer to out. It
// needs only the database.
func runMerchants(ctx context.Context, args []string, out io.Writer) error {
	if len(args) > 0 && args[0] == "retry-days" {
		return runRetryDays(ctx, args[1:], out)
	}
	if len(args) > 0 && args[0] == "set-rps" {
		return runSetRPS(ctx, args[1:], out)
	}
	if len(args) == 0 || args[0] != "create" {
		return errors.New(merchantsUsage)
	}
	var c config
	fs := newFlags("merchants create", &c)
	name := fs.String("name", "", "the merchant's name (required)")
	scopes := fs.String("scopes", strings.Join(merchants.AllScopes, ","), "comma-separated scopes: bind, withhold")
	asJSON := fs.Bool("json", false, `print {"merchant_id","client_id","client_secret"}`)
	rps := rpsFlag(fs)
	actor := fs.String("actor", "cli:"+env("USER", "operator"), "who is acting, for the audit trail")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q\n%s", fs.Arg(0), merchantsUsage)
	}
	if strings.TrimSpace(*name) == "" {
		return errors.New("merchants create needs --name\n" + merchantsUsage)
	}
	var list []string
	for s := range strings.SplitSeq(*scopes, ",") {
		if s = strings.TrimSpace(s); s != "" {
			list = append(list, s)
		}
	}

	store, closeStore, err := c.merchantStore(ctx)
	if err != nil {
		return err
	}
	defer closeStore()
	m, secret, err := store.CreateWith(merchants.WithActor(ctx, *actor),
		merchants.NewMerchant{Name: *name, Scopes: list, RPSCeiling: int(*rps)})
	if err != nil {
		return err
	}
	res := createdMerchant{MerchantID: m.ID, ClientID: m.ClientID, ClientSecret: secret}
	if *asJSON {
		return json.NewEncoder(out).Encode(res)
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "merchant_id\t%s\n", res.MerchantID)
	fmt.Fprintf(w, "name\t%s\n", m.Name)
	fmt.Fprintf(w, "scopes\t%s\n", strings.Join(m.Scopes, " "))
	fmt.Fprintf(w, "rps_ceiling\t%s\n", describeRPS(m.RPSCeiling))
	fmt.Fprintf(w, "client_id\t%s\n", res.ClientID)
	fmt.Fprintf(w, "client_secret\t%s\n", res.ClientSecret)
	if err := w.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, "\nThe client secret is shown only this once: quickpay keeps only a hash of it. Store it now.")
	return err
}

// runRetryDays sets the days after a charge date on which a merchant's
// declined charges (retryable reasons) are tried again.
func runRetryDays(ctx context.Context, args []string, out io.Writer) error {
	var c config
	fs := newFlags("merchants retry-days", &c)
	id := fs.String("merchant", "", "merchant id (required)")
	daysFlag := fs.String("days", "", "comma-separated days after the charge date, increasing, e.g. 1,3,5 (required)")
	actor := fs.String("actor", "cli:"+env("USER", "operator"), "who is acting, for the audit trail")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *id == "" || *daysFlag == "" {
		return errors.New(merchantsUsage)
	}
	var days []int
	for s := range strings.SplitSeq(*daysFlag, ",") {
		d, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("--days: %q is not a whole number of days", s)
		}
		days = append(days, d)
	}
	store, closeStore, err := c.merchantStore(ctx)
	if err != nil {
		return err
	}
	defer closeStore()
	if err := store.SetRetryDays(merchants.WithActor(ctx, *actor), *id, days); err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "merchant %s: declined charges are retried %s days after their date\n", *id, *daysFlag)
	return err
}

// rpsValue is the --rps flag: a whole number of requests per second from 0
// (no ceiling) to merchants.MaxRPSCeiling. Anything else fails the parse,
// and the flag package names the flag in the error.
type rpsValue int

func rpsFlag(fs *flag.FlagSet) *rpsValue {
	v := new(rpsValue)
	fs.Var(v, "rps", fmt.Sprintf("requests-per-second ceiling per serve instance, 0 to %d (0: none)", merchants.MaxRPSCeiling))
	return v
}

func (v *rpsValue) String() string {
	if v == nil {
		return "0"
	}
	return strconv.Itoa(int(*v))
}

func (v *rpsValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > merchants.MaxRPSCeiling {
		return fmt.Errorf("want a whole number of requests per second from 0 (none) to %d", merchants.MaxRPSCeiling)
	}
	*v = rpsValue(n)
	return nil
}

func describeRPS(n int) string {
	if n == 0 {
		return "none"
	}
	return fmt.Sprintf("%d requests/s per serve instance", n)
}

// runSetRPS gives a merchant a requests-per-second ceiling or takes it away
// (--rps 0). Serve instances apply it within api.DefaultCeilingTTL.
func runSetRPS(ctx context.Context, args []string, out io.Writer) error {
	var c config
	fs := newFlags("merchants set-rps", &c)
	id := fs.String("merchant", "", "merchant id (required)")
	rps := rpsFlag(fs)
	actor := fs.String("actor", "cli:"+env("USER", "operator"), "who is acting, for the audit trail")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q\n%s", fs.Arg(0), merchantsUsage)
	}
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "rps" })
	if *id == "" || !given {
		return errors.New("merchants set-rps needs --merchant and --rps\n" + merchantsUsage)
	}
	store, closeStore, err := c.merchantStore(ctx)
	if err != nil {
		return err
	}
	defer closeStore()
	if err := store.SetRPSCeiling(merchants.WithActor(ctx, *actor), *id, int(*rps)); err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "merchant %s: requests-per-second ceiling %s (serve instances apply it within %s)\n",
		*id, describeRPS(int(*rps)), api.DefaultCeilingTTL)
	return err
}

// merchantStore opens the merchants of c's database for a command; close
// releases its pool.
func (c *config) merchantStore(ctx context.Context) (store *merchants.Store, close func(), err error) {
	pool, err := db.Open(ctx, db.Config{URL: c.DatabaseURL})
	if err != nil {
		return nil, nil, err
	}
	if store, err = merchants.NewStore(merchants.Config{Pool: pool}); err != nil {
		pool.Close()
		return nil, nil, err
	}
	return store, pool.Close, nil
}
