// Command execlaw is the ExeClaw server: it runs AI coding agents, each in a
// sandbox of its own, behind a web UI and a JSON API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/execlaw/execlaw/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "execlaw:", err)
		}
		os.Exit(1)
	}
}

const usage = `Usage: execlaw <command> [flags]

Commands:
  serve     run the server (execlaw serve --help for its flags)
  image     build, list and verify guest images; the server's image (execlaw image)
  doctor    show which sandbox this host can run, and why
  keystore  keystore init PATH: make a key file for --key-store file:PATH
  version   print the version
`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], getenv, stdout, stderr)
	case "doctor":
		return doctor(ctx, args[1:], getenv, stdout, stderr)
	case "image":
		return imageCmd(ctx, args[1:], getenv, stdout, stderr)
	case "keystore":
		return keystoreCmd(args[1:], stdout)
	case "version", "--version":
		fmt.Fprintln(stdout, "execlaw", version.String())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}
