// Command composeconfig renders a Compose file's model as `docker compose
// config` does, with the same loader (compose-spec/compose-go, the library
// Docker Compose v2 is built on) and no Docker engine: interpolation, the
// Compose specification's schema, defaults, relative paths made absolute.
// internal/dev/devstack's compose test runs it where `docker compose` is
// not installed.
//
//	composeconfig path/to/docker-compose.yml   # the model as JSON on stdout
//
// It lives in its own Go module so that quickpay's main module does not
// carry compose-go's dependencies.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: composeconfig docker-compose.yml")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "composeconfig:", err)
		os.Exit(1)
	}
}

func run(file string) error {
	abs, err := filepath.Abs(file)
	if err != nil {
		return err
	}
	opts, err := cli.NewProjectOptions([]string{abs},
		cli.WithWorkingDirectory(filepath.Dir(abs)),
		cli.WithOsEnv,
		cli.WithDotEnv,
		cli.WithName("quickpay"),
	)
	if err != nil {
		return err
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		return err
	}
	b, err := project.MarshalJSON()
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(append(b, '\n'))
	return err
}
