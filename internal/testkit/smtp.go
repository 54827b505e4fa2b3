package testkit

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// SMTPServer is a minimal SMTP relay on loopback for notification tests:
// it accepts every message and records its envelope and data.
type SMTPServer struct {
	Addr string
	msgs chan SMTPMessage
}

// SMTPMessage is one message an SMTPServer received.
type SMTPMessage struct {
	Rcpt []string // RCPT TO addresses, in order
	Data string   // the message, headers and body, dot-unstuffed
}

// StartSMTP starts an SMTPServer, closed when the test ends.
func StartSMTP(t testing.TB) *SMTPServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &SMTPServer{Addr: ln.Addr().String(), msgs: make(chan SMTPMessage, 10)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.session(c)
		}
	}()
	return s
}

func (s *SMTPServer) session(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	reply := func(line string) { _, _ = io.WriteString(c, line+"\r\n") }
	reply("220 test ESMTP")
	var m SMTPMessage
	var data strings.Builder
	inData := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.TrimRight(line, "\r\n")
		switch up := strings.ToUpper(cmd); {
		case inData && cmd == ".":
			inData = false
			m.Data = data.String()
			reply("250 queued")
		case inData:
			data.WriteString(strings.TrimPrefix(cmd, ".") + "\r\n")
		case strings.HasPrefix(up, "EHLO"), strings.HasPrefix(up, "HELO"):
			reply("250 test")
		case strings.HasPrefix(up, "RCPT TO:"):
			m.Rcpt = append(m.Rcpt, strings.Trim(cmd[len("RCPT TO:"):], "<>"))
			reply("250 ok")
		case up == "DATA":
			inData = true
			reply("354 go ahead")
		case up == "QUIT":
			reply("221 bye")
			s.msgs <- m
			return
		default:
			reply("250 ok")
		}
	}
}

// Next returns the next message received, failing the test after 10 s.
func (s *SMTPServer) Next(t testing.TB) SMTPMessage {
	t.Helper()
	select {
	case m := <-s.msgs:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no email arrived")
		return SMTPMessage{}
	}
}

// Received returns a message received already, if any.
func (s *SMTPServer) Received() (SMTPMessage, bool) {
	select {
	case m := <-s.msgs:
		return m, true
	default:
		return SMTPMessage{}, false
	}
}
