package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/quickpay/quickpay/internal/operators"
)

const operatorsUsage = `usage: quickpay operators create --name NAME --role viewer|operator|admin [--json]
       quickpay operators list [--json]
       quickpay operators disable --name NAME
       quickpay operators reset --name NAME [--json]   (new password and TOTP secret; unlocks; ends sessions)`

// cmdOperators manages the operator console's staff (internal/operators).
func cmdOperators(ctx context.Context, args []string) error {
	return runOperators(ctx, args, os.Stdout)
}

// enrolledOperator is what `operators create --json` and `reset --json`
// print: exactly these five keys (DESIGN.md "Operator console").
type enrolledOperator struct {
	OperatorID string `json:"operator_id"`
	Name       string `json:"name"`
	Role       string `json:"role"`
	Password   string `json:"password"`
	TOTPURI    string `json:"totp_uri"`
}

// listedOperator is one operator of `operators list --json`.
type listedOperator struct {
	OperatorID  string     `json:"operator_id"`
	Name        string     `json:"name"`
	Role        string     `json:"role"`
	Status      string     `json:"status"`
	CreatedAt   time.Time  `json:"created_at"`
	LastLoginAt *time.Time `json:"last_login_at"`
	LockedUntil *time.Time `json:"locked_until"`
}

// runOperators runs `quickpay operators …`, writing its answer to out. It
// needs the database and the HSM (TOTP secrets are sealed there).
func runOperators(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New(operatorsUsage)
	}
	sub := args[0]
	var c config
	fs := newFlags("operators "+sub, &c)
	var (
		name, role *string
		asJSON     *bool
	)
	switch sub {
	case "create":
		name = fs.String("name", "", "the operator's login name (required): letters, digits, '.', '_', '-', '@'")
		role = fs.String("role", "", "viewer, operator or admin (required)")
		asJSON = fs.Bool("json", false, `print {"operator_id","name","role","password","totp_uri"}`)
	case "list":
		asJSON = fs.Bool("json", false, "print a JSON array")
	case "disable":
		name = fs.String("name", "", "the operator's name (required)")
	case "reset":
		name = fs.String("name", "", "the operator's name (required)")
		asJSON = fs.Bool("json", false, `print {"operator_id","name","role","password","totp_uri"}`)
	default:
		return errors.New(operatorsUsage)
	}
	actor := fs.String("actor", "cli:"+env("USER", "operator"), "who is acting, for the audit trail")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q\n%s", fs.Arg(0), operatorsUsage)
	}
	if name != nil && strings.TrimSpace(*name) == "" {
		return fmt.Errorf("operators %s needs --name\n%s", sub, operatorsUsage)
	}
	var r operators.Role
	if role != nil {
		var err error
		if r, err = operators.ParseRole(*role); err != nil {
			return fmt.Errorf("--role: %w\n%s", err, operatorsUsage)
		}
	}

	store, closeStore, err := c.operatorStore(ctx)
	if err != nil {
		return err
	}
	defer closeStore()
	switch sub {
	case "create":
		e, err := store.Create(ctx, *name, r, *actor)
		if err != nil {
			return err
		}
		return printEnrolment(out, e, *asJSON)
	case "reset":
		e, err := store.Reset(ctx, *name, *actor)
		if err != nil {
			return err
		}
		return printEnrolment(out, e, *asJSON)
	case "disable":
		if err := store.Disable(ctx, *name, *actor); err != nil {
			return err
		}
		_, err := fmt.Fprintf(out, "operator %s is disabled and its sessions are ended\n", strings.ToLower(strings.TrimSpace(*name)))
		return err
	case "list":
		list, err := store.List(ctx)
		if err != nil {
			return err
		}
		now := time.Now()
		if c.Clock != nil {
			now = c.Clock.Now()
		}
		return printOperators(out, list, now, *asJSON)
	default:
		return errors.New(operatorsUsage)
	}
}

// printEnrolment prints a new operator's or a reset's credentials, once;
// without asJSON also the TOTP URI as a QR code for an authenticator app.
func printEnrolment(out io.Writer, e operators.Enrolment, asJSON bool) error {
	res := enrolledOperator{OperatorID: e.Operator.ID, Name: e.Operator.Name, Role: string(e.Operator.Role),
		Password: e.Password, TOTPURI: e.TOTPURI}
	if asJSON {
		return json.NewEncoder(out).Encode(res)
	}
	qr, err := operators.QRTerminal(e.TOTPURI)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "operator_id\t%s\n", res.OperatorID)
	fmt.Fprintf(w, "name\t%s\n", res.Name)
	fmt.Fprintf(w, "role\t%s\n", res.Role)
	fmt.Fprintf(w, "password\t%s\n", res.Password)
	fmt.Fprintf(w, "totp_uri\t%s\n", res.TOTPURI)
	if err := w.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "\nScan this code with an authenticator app (or enter the URI's secret):\n\n%s\n"+
		"The password and the TOTP secret are shown only this once: quickpay keeps only a hash of the\n"+
		"password and the secret sealed in the HSM. Hand them to the operator now.\n", qr)
	return err
}

// printOperators lists operators, as locked those whose lockout ends after
// now.
func printOperators(out io.Writer, list []operators.Operator, now time.Time, asJSON bool) error {
	if asJSON {
		res := make([]listedOperator, 0, len(list))
		for _, o := range list {
			res = append(res, listedOperator{OperatorID: o.ID, Name: o.Name, Role: string(o.Role), Status: operatorStatus(o),
				CreatedAt: o.CreatedAt, LastLoginAt: timeOrNil(o.LastLoginAt), LockedUntil: lockedOrNil(o, now)})
		}
		return json.NewEncoder(out).Encode(res)
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "OPERATOR_ID\tNAME\tROLE\tSTATUS\tLAST_LOGIN\tLOCKED_UNTIL")
	for _, o := range list {
		locked := "-"
		if l := lockedOrNil(o, now); l != nil {
			locked = l.Format(time.RFC3339)
		}
		last := "never"
		if !o.LastLoginAt.IsZero() {
			last = o.LastLoginAt.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", o.ID, o.Name, o.Role, operatorStatus(o), last, locked)
	}
	return w.Flush()
}

func operatorStatus(o operators.Operator) string {
	if o.Disabled {
		return "disabled"
	}
	return "active"
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// lockedOrNil is when the operator's lockout ends, nil if it is not
// locked at now.
func lockedOrNil(o operators.Operator, now time.Time) *time.Time {
	if o.LockedUntil.After(now) {
		return timeOrNil(o.LockedUntil)
	}
	return nil
}

// operatorStore opens the operators of c's database, with the vault that
// seals their TOTP secrets, for a command; close releases them.
func (c *config) operatorStore(ctx context.Context) (store *operators.Store, close func(), err error) {
	d, err := c.open(ctx, c.logger(), false)
	if err != nil {
		return nil, nil, err
	}
	if store, err = operators.NewStore(operators.Config{Pool: d.pool, Sealer: d.vault, Clock: c.Clock}); err != nil {
		d.close()
		return nil, nil, err
	}
	return store, d.close, nil
}
