package transcript

import (
	"bytes"
	"fmt"
	"html"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/renderer"
	"github.com/yuin/goldmark/util"
)

// HTML renders the events as a self-contained HTML document, for the HTML
// part of a mailed transcript, from at most max bytes of Markdown (cut with
// a note, as Bounded does). Everything in it comes from the Markdown
// rendering, converted safely: HTML written in messages shows as text (it is
// escaped, never interpreted), dangerous link schemes (javascript:, data:
// ...) are emptied, and images become text, so a mail client runs nothing
// and loads nothing from anywhere.
func HTML(h Header, events Events, max int) (string, error) {
	md, _, err := bounded(h, events, max, true)
	if err != nil {
		return "", err
	}
	var body bytes.Buffer
	if err := markdownHTML.Convert([]byte(md), &body); err != nil {
		return "", fmt.Errorf("render transcript as HTML: %w", err)
	}
	var b bytes.Buffer
	b.WriteString("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">")
	b.WriteString("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
	fmt.Fprintf(&b, "<title>%s</title>", html.EscapeString(oneLine(h.Name)))
	b.WriteString("<style>" + mailCSS + "</style></head>\n<body>\n")
	b.Write(body.Bytes())
	b.WriteString("</body></html>\n")
	return b.String(), nil
}

// mailCSS is inline: a mail client must not fetch a style sheet.
const mailCSS = `body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;line-height:1.5;color:#1f2328;max-width:60em;margin:0 auto;padding:1em}` +
	`pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:.75em;overflow:auto;white-space:pre-wrap;word-wrap:break-word}` +
	`code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:90%}` +
	`blockquote{color:#59636e;border-left:.25em solid #d0d7de;margin:0;padding:0 1em}` +
	`h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em}`

// markdownHTML is goldmark in its safe mode (no raw HTML) with GitHub's
// Markdown extensions, and images rendered as text.
var markdownHTML = goldmark.New(
	goldmark.WithExtensions(extension.GFM),
	goldmark.WithRendererOptions(
		renderer.WithNodeRenderers(util.Prioritized(textImages{}, 100), util.Prioritized(escapedHTML{}, 100)),
	),
)

// textImages renders ![alt](url) as "[image: alt]" with the address as text:
// an image in a mail is remote content that tells the sender it was opened.
type textImages struct{}

func (textImages) RegisterFuncs(r renderer.NodeRendererFuncRegisterer) {
	r.Register(ast.KindImage, func(w util.BufWriter, source []byte, n ast.Node, entering bool) (ast.WalkStatus, error) {
		img := n.(*ast.Image)
		if entering {
			_, _ = w.WriteString("[image: ")
			return ast.WalkContinue, nil
		}
		_, _ = w.WriteString("]")
		if len(img.Destination) > 0 {
			_, _ = w.WriteString(" (")
			_, _ = w.Write(util.EscapeHTML(img.Destination))
			_, _ = w.WriteString(")")
		}
		return ast.WalkContinue, nil
	})
}

// escapedHTML shows HTML that messages contain as text instead of dropping
// it (goldmark's safe mode would leave "raw HTML omitted" comments): what
// someone wrote stays readable, and none of it is markup.
type escapedHTML struct{}

func (escapedHTML) RegisterFuncs(r renderer.NodeRendererFuncRegisterer) {
	r.Register(ast.KindRawHTML, func(w util.BufWriter, source []byte, n ast.Node, entering bool) (ast.WalkStatus, error) {
		if entering {
			segs := n.(*ast.RawHTML).Segments
			for i := range segs.Len() {
				seg := segs.At(i)
				_, _ = w.Write(util.EscapeHTML(seg.Value(source)))
			}
		}
		return ast.WalkSkipChildren, nil
	})
	r.Register(ast.KindHTMLBlock, func(w util.BufWriter, source []byte, n ast.Node, entering bool) (ast.WalkStatus, error) {
		if !entering {
			return ast.WalkSkipChildren, nil
		}
		b := n.(*ast.HTMLBlock)
		_, _ = w.WriteString("<p>")
		lines := b.Lines()
		for i := range lines.Len() {
			seg := lines.At(i)
			_, _ = w.Write(util.EscapeHTML(seg.Value(source)))
		}
		if b.HasClosure() {
			_, _ = w.Write(util.EscapeHTML(b.ClosureLine.Value(source)))
		}
		_, _ = w.WriteString("</p>\n")
		return ast.WalkSkipChildren, nil
	})
}
