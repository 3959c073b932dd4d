// Command quickpay is the one service binary.
//
//	quickpay serve                    HTTP API, background workers, scheduler
//	quickpay migrate                  apply database migrations (River's and quickpay's)
//	quickpay dev                      the whole local stack (what `make run` runs)
//	quickpay merchants create --name NAME [--scopes bind,withhold] [--rps N] [--json]
//	                                  a merchant and its API credentials (secret shown once)
//	quickpay merchants set-rps --merchant ID --rps N
//	                                  its requests-per-second ceiling per serve instance (0: none)
//	quickpay charges run-due [--as-of RFC3339]
//	                                  charge what is due (then), and wait for the banks' answers
//	quickpay reconcile --date YYYY-MM-DD [--bank CODE] [--json]
//	                                  reconcile the banks' statements of a day, write its settlement files
//	quickpay keys list                key versions and their states
//	quickpay keys rotate data|fp|jwt  create version N+1 and re-encrypt in the background
//	quickpay keys retire data|fp|jwt --min-version N
//
// Every subcommand reads the variables `quickpay dev` writes to .quickpay/env;
// flags override them. `quickpay <command> -h` lists them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: quickpay <command> [flags]

commands:
  serve     run the HTTP API and background workers
  migrate   apply database migrations
  dev       run the whole local stack (Postgres, SoftHSM2, Vault, banksim, serve)
  merchants manage merchants and their API client credentials
  charges   run-due: charge what is due (--as-of for another instant)
  reconcile reconcile the banks' statements of a day and write its settlement files
  keys      list, rotate or retire HSM key versions
  operators create, list, disable or reset the operator console's staff
  banks     connect-sim: connect the platform to a banksim

Run 'quickpay <command> -h' for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	switch os.Args[1] {
	case "-h", "--help", "help":
	default:
		// A variable that fails to parse stops every command, not only
		// those that use it: they share one configuration.
		if err := checkEnv(); err != nil {
			fmt.Fprintln(os.Stderr, "quickpay:", err)
			os.Exit(2)
		}
	}
	var err error
	args := os.Args[2:]
	switch os.Args[1] {
	case "serve":
		err = cmdServe(ctx, args)
	case "migrate":
		err = cmdMigrate(ctx, args)
	case "dev":
		err = cmdDev(ctx, args)
	case "merchants":
		err = cmdMerchants(ctx, args)
	case "banks":
		err = cmdBanks(ctx, args)
	case "keys":
		err = cmdKeys(ctx, args)
	case "charges":
		err = cmdCharges(ctx, args)
	case "reconcile":
		err = cmdReconcile(ctx, args)
	case "operators":
		err = cmdOperators(ctx, args)
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "quickpay: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "quickpay:", err)
		}
		os.Exit(1)
	}
}

func newFlags(name string, c *config) *flag.FlagSet {
	fs := flag.NewFlagSet("quickpay "+name, flag.ContinueOnError)
	c.flags(fs)
	return fs
}
