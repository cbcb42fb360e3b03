package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/execlaw/execlaw/internal/keystore"
)

// keystoreCmd is `execlaw keystore init PATH`: a new random key file for
// --key-store file:PATH (mode 0600; an existing file is never replaced).
func keystoreCmd(args []string, stdout io.Writer) error {
	if len(args) != 2 || args[0] != "init" {
		return errors.New("usage: execlaw keystore init PATH")
	}
	if err := keystore.GenerateFile(args[1]); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote a new key to %s: start the server with --key-store file:%s (keep the file outside the data directory, readable only by the server)\n", args[1], args[1])
	return nil
}
