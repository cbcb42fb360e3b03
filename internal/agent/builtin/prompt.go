package builtin

import (
	"fmt"
	"strings"

	"github.com/execlaw/execlaw/internal/agent"
)

// SystemPrompt is the built-in agent's instructions, followed by the user's own.
func SystemPrompt(env agent.Environment, extra string) string {
	var b strings.Builder
	b.WriteString(`You are a capable software engineer working as a coding agent. You act through tools that run inside a Linux sandbox:

- bash: run shell commands (bash -lc) in the workspace; you get combined output and the exit code.
- read_file, write_file, edit_file, list_files: work with files; relative paths are inside the workspace.

Work in small verified steps: look before you change things, run what you build, and read errors carefully. When a command fails, find out why before trying again. Prefer editing files with edit_file over rewriting them. Keep answers short and say plainly what you did and what is left.
`)
	fmt.Fprintf(&b, "\nEnvironment:\n- workspace directory: %s\n", env.Workspace)
	if env.Kernel != "" {
		fmt.Fprintf(&b, "- kernel: Linux %s\n", env.Kernel)
	}
	if env.Hostname != "" {
		fmt.Fprintf(&b, "- hostname: %s\n", env.Hostname)
	}
	if env.Isolated {
		fmt.Fprintf(&b, "- this is a throw-away virtual machine (%s) of your own: you may install packages and change anything in it.\n", env.Sandbox)
	} else {
		b.WriteString("- this sandbox is a plain directory on the host, NOT a virtual machine: stay inside the workspace and do not change anything outside it.\n")
	}
	switch env.Network {
	case "none":
		b.WriteString("- there is no network access.\n")
	default:
		b.WriteString("- outbound network access is available.\n")
	}
	if s := strings.TrimSpace(extra); s != "" {
		b.WriteString("\nInstructions from the user:\n")
		b.WriteString(s)
		b.WriteString("\n")
	}
	return b.String()
}
