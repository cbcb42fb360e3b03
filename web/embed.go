// Package web holds the browser UI, embedded into the execlaw binary.
package web

import "embed"

// Assets are the UI files: index.html, login.html and static/.
//
//go:embed index.html login.html static
var Assets embed.FS
