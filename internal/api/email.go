package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/execlaw/execlaw/internal/mail"
	"github.com/execlaw/execlaw/internal/session"
	"github.com/execlaw/execlaw/internal/transcript"
)

// emailRequest is the body of POST /api/sessions/{id}/email.
type emailRequest struct {
	To string `json:"to"`
}

// handleEmail mails a session's transcript to an allowed recipient. Sending
// reads the transcript and changes nothing: a failed send loses nothing.
func (s *Server) handleEmail(w http.ResponseWriter, r *http.Request) error {
	id, err := sessionID(r)
	if err != nil {
		return err
	}
	user := userFrom(r.Context())
	view, err := s.sessions.View(r.Context(), user, id)
	if err != nil {
		return err
	}
	var req emailRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if s.email.Sender == nil {
		return errorf(http.StatusNotImplemented, "e-mail is not configured on this server (see EXECLAW_SMTP_ADDR); download the transcript instead")
	}
	to, err := s.checkRecipient(req.To, user)
	if err != nil {
		return err
	}
	msg, err := s.transcriptMail(r.Context(), user, view, to)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.email.Timeout)
	defer cancel()
	err = s.email.Sender.Send(ctx, msg)
	s.metrics.TranscriptSent("email", err)
	if err != nil {
		s.log.Warn("e-mail transcript", "session", id, "via", s.email.Sender.String(), "err", err)
		reason := "the mail server did not accept it"
		var de *mail.DeliveryError
		if errors.As(err, &de) {
			reason = de.Transport + " did not take it"
			if errors.Is(err, context.DeadlineExceeded) {
				reason = de.Transport + " did not answer in time"
			}
		}
		return errorf(http.StatusBadGateway, "could not send the transcript: %s. Nothing was changed; try again later or download the transcript", reason)
	}
	s.log.Info("transcript e-mailed", "session", id, "via", s.email.Sender.String())
	writeJSON(w, http.StatusOK, okBody)
	return nil
}

// checkRecipient allows one plain address that is the user's own or on the
// operator's list.
func (s *Server) checkRecipient(raw string, user session.User) (string, error) {
	to, err := mail.CheckAddress(raw)
	if err != nil {
		return "", errorf(http.StatusBadRequest, `"to" must be one e-mail address, like name@example.com`)
	}
	if !s.email.Allow.Allows(to, user.Email) {
		var allowed []string
		if user.Email != "" {
			allowed = append(allowed, "your own address ("+user.Email+")")
		}
		if !s.email.Allow.Empty() {
			allowed = append(allowed, "the addresses the operator allowed in EXECLAW_EMAIL_ALLOW")
		}
		if len(allowed) == 0 {
			return "", errorf(http.StatusBadRequest, "%s is not an allowed recipient: this server mails transcripts only to addresses the operator allows (EXECLAW_EMAIL_ALLOW), and it allows none", to)
		}
		return "", errorf(http.StatusBadRequest, "%s is not an allowed recipient: this server mails transcripts only to %s", to, strings.Join(allowed, " or "))
	}
	return to, nil
}

// idleRecipient is where a session's transcript goes when the reaper ends
// it: the owner's address, or for a user without one the operator's (the
// first address on the allow list). Empty when there is none.
func (s *Server) idleRecipient(user session.User) string {
	if s.email.Sender == nil {
		return ""
	}
	if user.Email != "" {
		if to, err := mail.CheckAddress(user.Email); err == nil {
			return to
		}
	}
	return s.email.Allow.Owner()
}

// maxMailTranscript bounds the Markdown of a mailed transcript (mail
// servers refuse large messages; the download has no such bound).
const maxMailTranscript = 4 << 20

// transcriptMail composes the mail of a session's transcript: Markdown as
// the text part, the same rendered as safe HTML as the alternative.
func (s *Server) transcriptMail(ctx context.Context, user session.User, view session.View, to string) (mail.Message, error) {
	h, events := transcriptHeader(view), s.eventsOf(ctx, user, view.ID)
	text, _, err := transcript.Bounded(h, events, maxMailTranscript)
	if err != nil {
		return mail.Message{}, err
	}
	html, err := transcript.HTML(h, events, maxMailTranscript)
	if err != nil {
		return mail.Message{}, err
	}
	return mail.Message{
		To:      to,
		Subject: fmt.Sprintf("ExeClaw transcript: %s", view.Name),
		Text:    text + "\n-- \nSent by ExeClaw.\n",
		HTML:    html,
		Date:    time.Now(),
	}, nil
}

// mailIdleTranscript is the session manager's idle hook: it mails the
// transcript of a session the reaper ended to its owner. Failures are
// logged; the session and its transcript are already final.
func (s *Server) mailIdleTranscript(ctx context.Context, owner session.User, v session.View, to string) {
	msg, err := s.transcriptMail(ctx, owner, v, to)
	if err == nil {
		msg.Automatic = true
		msg.Subject = fmt.Sprintf("ExeClaw transcript: %s (ended after %d idle minutes)", v.Name, v.IdleTimeoutMin)
		err = s.email.Sender.Send(ctx, msg)
	}
	s.metrics.TranscriptSent("email_idle", err)
	if err != nil {
		s.log.Error("e-mail transcript of idle session", "session", v.ID, "via", s.email.Sender.String(), "err", err)
		return
	}
	s.log.Info("transcript of idle session e-mailed", "session", v.ID, "via", s.email.Sender.String())
}
