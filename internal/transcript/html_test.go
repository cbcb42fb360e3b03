package transcript

import (
	"encoding/json"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/execlaw/execlaw/internal/event"
)

func TestHTMLIsSafeAndComplete(t *testing.T) {
	h := header()
	h.Name = `Fix <b>the</b> "build"`
	events := log(t,
		event.UserMessage, event.UserMessageData{MessageID: "u1", Content: "Run <script>alert('user')</script> please"},
		event.Thinking, event.MessageData{MessageID: "t1", Role: "assistant", Content: "Thinking about <iframe src=x>."},
		event.Message, event.MessageData{MessageID: "m1", Role: "assistant", Content: "Sure. **Bold** and a [link](javascript:alert(1)), " +
			"an image ![tracker](https://evil.example/pixel.png \"t\") and <img src=https://evil.example/raw.png> and <a href=\"https://x\" onclick=\"y\">raw</a>.\n\n" +
			"<div style=\"background:url(https://evil.example/bg)\">block</div>"},
		event.ToolCall, event.ToolCallData{ID: "c1", Name: "bash", Input: json.RawMessage(`{"command":"echo '<b>hi</b>' && cat /etc/hostname"}`)},
		event.ToolResult, event.ToolResultData{ID: "c1", Name: "bash", Output: "<b>hi</b>\n```\n</code></pre><script>x()</script>\n", ExitCode: intp(0), DurationMs: 12},
		event.Error, event.ErrorData{Message: "provider <em>failed</em>"},
	)
	doc, err := HTML(h, Slice(events), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	checkSafeHTML(t, doc)
	for _, want := range []string{
		"<title>Fix &lt;b&gt;the&lt;/b&gt; &#34;build&#34;</title>",
		"<h2>User</h2>", "Run &lt;script&gt;alert(", "<h2>Assistant</h2>", "<strong>Bold</strong>",
		"<em>Thinking:</em>", "Thinking about &lt;iframe src=x&gt;.",
		"[image: tracker] (https://evil.example/pixel.png)",
		"Tool call: bash", "echo '&lt;b&gt;hi&lt;/b&gt;' &amp;&amp; cat", "&lt;b&gt;hi&lt;/b&gt;", "&lt;/code&gt;&lt;/pre&gt;&lt;script&gt;x()&lt;/script&gt;",
		"exit code 0", "1234 input tokens, 567 output tokens",
		"provider &lt;em&gt;failed&lt;/em&gt;",
	} {
		if !strings.Contains(doc, want) && !strings.Contains(doc, strings.ReplaceAll(want, "'", "&#39;")) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("HTML:\n%s", doc)
	}
	// The Markdown keeps its <details> block for thinking; the HTML labels it.
	if md := Markdown(h, events); !strings.Contains(md, "<details><summary>Thinking</summary>") {
		t.Error("Markdown lost its thinking block")
	}
}

// checkSafeHTML parses doc and fails on any element or attribute outside
// what the renderer is meant to produce: nothing that runs, loads or styles
// from elsewhere can be in it.
func checkSafeHTML(t *testing.T, doc string) {
	t.Helper()
	allowed := map[string]bool{"html": true, "head": true, "meta": true, "title": true, "style": true, "body": true,
		"h1": true, "h2": true, "h3": true, "h4": true, "ul": true, "ol": true, "li": true, "p": true, "em": true, "strong": true,
		"code": true, "pre": true, "blockquote": true, "a": true, "br": true, "hr": true, "del": true,
		"table": true, "thead": true, "tbody": true, "tr": true, "th": true, "td": true, "input": true}
	z := html.NewTokenizer(strings.NewReader(doc))
	styles := 0
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			return
		}
		if tt != html.StartTagToken && tt != html.SelfClosingTagToken {
			continue
		}
		tok := z.Token()
		if !allowed[tok.Data] {
			t.Errorf("element <%s> in the HTML", tok.Data)
		}
		if tok.Data == "style" {
			if styles++; styles > 1 {
				t.Error("more than the one inline style sheet")
			}
		}
		for _, a := range tok.Attr {
			switch {
			case a.Key == "href" && (a.Val == "" || strings.HasPrefix(a.Val, "https://") || strings.HasPrefix(a.Val, "http://") || strings.HasPrefix(a.Val, "mailto:")):
			case a.Key == "class" && strings.HasPrefix(a.Val, "language-"):
			case tok.Data == "meta" && (a.Key == "charset" || a.Key == "name" || a.Key == "content"):
			case tok.Data == "input" && (a.Key == "type" && a.Val == "checkbox" || a.Key == "disabled" || a.Key == "checked"):
			default:
				t.Errorf("attribute %s=%q on <%s>", a.Key, a.Val, tok.Data)
			}
		}
	}
}
