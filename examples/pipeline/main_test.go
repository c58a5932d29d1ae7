package main

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uuidforge/uuidforge/internal/testenv"
)

// TestMain lets the test binary play the worker: run starts os.Executable()
// (this binary, under go test) with "worker" as its first argument.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		os.Exit(workerMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}

var (
	pipelineLine = regexp.MustCompile(`^pipeline: inputs=(\d+) crashes=(\d+) derived_records=(\d+) derived_unique=(\d+) processed_downstream=(\d+) ids_differing=(\d+) lost=(\d+)$`)
	killedOrder  = regexp.MustCompile(`published the invoice for (SO-\d+) .*now killed before the ack`)
)

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		orders, crashEvery int
	}{
		{6, 3}, // workers killed after the invoices of orders 3 and 6
		{4, 0}, // no crash: no duplicate on the topic
	} {
		t.Run(fmt.Sprintf("orders=%d/crash-every=%d", tc.orders, tc.crashEvery), func(t *testing.T) {
			cfg := config{
				AMQPURL: testenv.AMQPURL(t), RedisURL: testenv.RedisURL(t),
				Orders: tc.orders, CrashEvery: tc.crashEvery, Lease: time.Second,
				Timeout: 45 * time.Second,
			}
			ctx := testenv.Context(t, 60*time.Second)
			var out bytes.Buffer
			if err := run(ctx, cfg, &out); err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			crashes := 0
			if tc.crashEvery > 0 {
				crashes = tc.orders / tc.crashEvery
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			last := lines[len(lines)-1]
			m := pipelineLine.FindStringSubmatch(last)
			if m == nil {
				t.Fatalf("last line %q does not match %s\n%s", last, pipelineLine, out.String())
			}
			n := make([]int, len(m))
			for i := 1; i < len(m); i++ {
				n[i], _ = strconv.Atoi(m[i])
			}
			inputs, killed, records, unique, processed, differing, lost := n[1], n[2], n[3], n[4], n[5], n[6], n[7]
			// Every kill left one invoice on the topic at least twice (a
			// handler timeout under load could add another copy), all copies
			// with one ID; downstream processed each invoice once.
			if inputs != tc.orders || killed != crashes || records < tc.orders+crashes || unique != tc.orders ||
				processed != tc.orders || differing != 0 || lost != 0 {
				t.Errorf("got %s; want inputs=%d crashes=%d derived_records>=%d derived_unique=%d processed_downstream=%d ids_differing=0 lost=0\n%s",
					last, tc.orders, crashes, tc.orders+crashes, tc.orders, tc.orders, out.String())
			}
			if n := strings.Count(out.String(), "now killed before the ack"); n != crashes {
				t.Errorf("%d workers report being killed, want %d\n%s", n, crashes, out.String())
			}
			// Each killed worker's order shows up with its copies.
			for _, o := range killedOrder.FindAllStringSubmatch(out.String(), -1) {
				if !regexp.MustCompile(`invoice for ` + o[1] + `: [2-9] records on the topic`).MatchString(out.String()) {
					t.Errorf("the invoice of %s, published by a killed worker, is not reported as duplicated on the topic\n%s", o[1], out.String())
				}
			}
		})
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	for _, cfg := range []config{{Orders: 0, Lease: time.Second}, {Orders: 2, CrashEvery: -1, Lease: time.Second}, {Orders: 2}} {
		if err := run(t.Context(), cfg, &bytes.Buffer{}); err == nil {
			t.Errorf("run(%+v) = nil, want an error", cfg)
		}
	}
}

// TestRunHidesPasswords gives the program RabbitMQ and Redis URLs whose
// password a parser would quote or misread, and checks that neither the
// error nor the output (the workers' included) shows any part of the
// password.
func TestRunHidesPasswords(t *testing.T) {
	const secret = "secret99"
	amqpURL, redisURL := testenv.AMQPURL(t), testenv.RedisURL(t)
	for _, tc := range []struct{ amqp, redis string }{
		{"amqp://guest:pw/" + secret + "@127.0.0.1:5672/", redisURL}, // '/' in the password: the parser stops the host there
		{"amqp://guest:2024/" + secret + "@127.0.0.1:5672/", redisURL},
		{"amqp://guest:pw%zz" + secret + "@127.0.0.1:5672/", redisURL}, // a bad escape
		{amqpURL, "redis://:pw/" + secret + "@127.0.0.1:6379/0"},
		{amqpURL, "redis://:2024/" + secret + "@127.0.0.1:6379/0"},
		{amqpURL, "redis://:" + secret + "@127.0.0.1:6379/x"}, // a bad database number
	} {
		var out bytes.Buffer
		cfg := config{AMQPURL: tc.amqp, RedisURL: tc.redis, Orders: 1, Lease: time.Second, Timeout: 20 * time.Second, Stderr: &out}
		err := run(t.Context(), cfg, &out)
		if err == nil {
			t.Errorf("run with %s and %s: no error", redact(tc.amqp), redact(tc.redis))
			continue
		}
		if strings.Contains(err.Error()+out.String(), secret) {
			t.Errorf("the password shows:\nerror: %v\noutput: %s", err, out.String())
		}
	}
}
