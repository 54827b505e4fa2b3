package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// TestTextOutputEscapesIDs: ids are the application's (or a model file's)
// choice. The text outputs that print them (`status`'s invalid records,
// `access --object`, `explain`) quote an id holding control characters, so
// it cannot clear the operator's terminal or forge a line.
func TestTextOutputEscapesIDs(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	const hostile = "a\x1b]0;pwned\x07\x1b[2J\nforged: 0"
	var owner string
	if err := o.pool.QueryRow(context.Background(), `SELECT owner FROM recalc.record WHERE object = 'account' ORDER BY id LIMIT 1`).Scan(&owner); err != nil {
		t.Fatal(err)
	}
	o.exec(`INSERT INTO recalc.record (id, object, owner, fields) VALUES ($1, 'account', $2, '{}'), ($1 || 'x', 'account', 'ghost', '{}')`, hostile, owner)
	o.run("run")
	for _, args := range [][]string{
		{"status"},
		{"access", "--user", owner, "--object", "account", "--limit", "10000"},
		{"explain", "--user", owner, "--record", hostile},
	} {
		out := o.run(args...)
		if !strings.Contains(out, `\x1b]0;pwned\a`) {
			t.Errorf("recalc %s does not show the id quoted:\n%s", args[0], out)
		}
		if strings.Contains(out, "\x1b") || strings.Contains(out, "\nforged") {
			t.Errorf("recalc %s writes the id's control characters raw:\n%q", args[0], out)
		}
	}
}

// TestStatusEscapesWebhookAnswers: the reason phrase of a webhook's answer
// is the receiving server's text, which Go passes on as it came, control
// characters included. A failed delivery keeps it as the notification's
// last error, and `recalc status` printed it raw to the operator's terminal
// (found by an attack helper); it is quoted now, as ids are.
func TestStatusEscapesWebhookAnswers(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if req, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
				_, _ = io.Copy(io.Discard, req.Body)
				_, _ = io.WriteString(c, "HTTP/1.1 503 x\x1b]0;pwned\x07\x1b[2J\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			}
			c.Close()
		}
	}()
	o.changeRecords(3, 0)
	o.run("run", "--notify-url", "http://"+ln.Addr().String()+"/hook", "--notify-retries", "0")
	out := o.run("status")
	if !strings.Contains(out, `x\x1b]0;pwned\a\x1b[2J`) {
		t.Errorf("recalc status does not show the webhook's answer quoted:\n%s", out)
	}
	if strings.Contains(out, "\x1b") {
		t.Errorf("recalc status writes the webhook's answer's control characters raw:\n%q", out)
	}
}

// TestPageCSVQuotesAsTheDump: `access --user U --object O --format csv`
// quotes a record's id exactly as the whole dump (`access --format csv`)
// does, only when it holds a comma, quote or line break; it used
// encoding/csv, which also quoted a leading space and `\.`.
func TestPageCSVQuotesAsTheDump(t *testing.T) {
	t.Parallel()
	o := newProcessOrg(t, 200)
	var owner string
	if err := o.pool.QueryRow(context.Background(), `SELECT owner FROM recalc.record WHERE object = 'account' ORDER BY id LIMIT 1`).Scan(&owner); err != nil {
		t.Fatal(err)
	}
	ids := []string{" lead", `\.`, "a,b", `q"q`, "l\nf"}
	for _, id := range ids {
		o.exec(`INSERT INTO recalc.record (id, object, owner, fields) VALUES ($1, 'account', $2, '{}')`, id, owner)
	}
	o.run("run")
	dump, page := o.run("access", "--format", "csv"), o.run("access", "--user", owner, "--object", "account", "--format", "csv", "--limit", "10000")
	for _, tc := range []struct{ id, field string }{
		{" lead", " lead"}, {`\.`, `\.`}, {"a,b", `"a,b"`}, {`q"q`, `"q""q"`}, {"l\nf", "\"l\nf\""},
	} {
		if want := "account," + tc.field + "," + owner + ",all\n"; !strings.Contains(dump, want) {
			t.Errorf("the dump does not print %q as %q", tc.id, want)
		}
		if want := "\n" + tc.field + ",all\n"; !strings.Contains(page, want) {
			t.Errorf("the page does not print %q as the dump does, %q:\n%s", tc.id, want, page)
		}
	}
}
