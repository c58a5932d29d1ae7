package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/uuidforge/uuidforge/internal/testenv"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == workerCommand {
		os.Exit(runWorker(os.Args[2:]))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command-line flags.
type options struct {
	n          int
	seed       uint64
	amqp       string
	postgres   string
	ctl        string
	transports string
	failRate   float64
	timeout    time.Duration
	lease      time.Duration
	keep       bool
	noDedupe   bool
	verbose    bool
}

func (o options) rabbit() bool { return o.transports != "kafka" }
func (o options) kafka() bool  { return o.transports != "rabbitmq" }

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.n, "n", 20000, "distinct messages to send, over both transports together")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the copies, their order and the handler failures")
	fs.StringVar(&o.amqp, "amqp", envOr(testenv.EnvAMQP, testenv.DefaultAMQPURL), "RabbitMQ URL of a user that may add users (default $"+testenv.EnvAMQP+")")
	fs.StringVar(&o.postgres, "postgres", envOr(testenv.EnvPostgres, testenv.DefaultPostgresURL), "PostgreSQL URL (default $"+testenv.EnvPostgres+")")
	fs.StringVar(&o.ctl, "rabbitmqctl", "rabbitmqctl", "rabbitmqctl command, used to add the run's user and close its connections")
	fs.StringVar(&o.transports, "transports", "both", "both, rabbitmq or kafka")
	fs.Float64Var(&o.failRate, "fail", 0.2, "fraction of handler attempts that fail")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up (and exit 1) after this long")
	fs.DurationVar(&o.lease, "lease", 4*time.Second, "dedupe lease: how long a killed consumer's claims block their messages")
	fs.BoolVar(&o.keep, "keep", false, "keep the run's PostgreSQL tables for inspection")
	fs.BoolVar(&o.noDedupe, "no-dedupe", false, "consume without the dedupe middleware (the run must then fail: shows the check works)")
	fs.BoolVar(&o.verbose, "v", false, "show the consumers' warnings")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	case o.n < 1:
		return o, fmt.Errorf("-n %d: need at least one message", o.n)
	case o.transports != "both" && o.transports != "rabbitmq" && o.transports != "kafka":
		return o, fmt.Errorf("-transports %q: want both, rabbitmq or kafka", o.transports)
	case o.failRate < 0 || o.failRate > 0.9:
		return o, fmt.Errorf("-fail %v: want 0 to 0.9", o.failRate)
	case o.lease < 500*time.Millisecond:
		return o, fmt.Errorf("-lease %v: want at least 500ms", o.lease)
	case o.timeout <= 0:
		return o, fmt.Errorf("-timeout %v", o.timeout)
	}
	return o, nil
}

// run is the coordinator: it sets up, runs the chaos and prints the result.
// Exit status: 0 all counts right, 1 a count is off, 2 setup failed.
func run(args []string, stdout, stderr io.Writer) int {
	opt, err := parseOptions(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "chaos:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var id [4]byte
	if _, err := rand.Read(id[:]); err != nil {
		fmt.Fprintln(stderr, "chaos:", err)
		return 2
	}
	c := &chaos{opt: opt, out: stdout, errOut: stderr, start: time.Now(), run: hex.EncodeToString(id[:])}
	if err := c.setup(ctx); err != nil {
		c.cleanup()
		fmt.Fprintln(stderr, "chaos: setup:", err)
		return 2
	}
	res, err := c.chaos(ctx)
	c.cleanup()
	if err != nil {
		fmt.Fprintln(stderr, "chaos:", err)
	}
	problems := res.problems()
	if err != nil {
		problems = append(problems, err.Error())
	}
	fmt.Fprintf(stdout, "checks: rows=%d distinct=%d unexpected=%d misrouted=%d replay_new_effects=%d replayed_records=%d left_in_queue=%d\n",
		res.effects, res.distinct, res.unexpected, res.misrouted, res.replayNew, res.replayed, res.leftInQueue)
	fmt.Fprintf(stdout, "faults: extra_copies=%d handler_failures=%d (panics %d) rabbitmq_connection_kills=%d consumer_sigkills=%d kafka_restarts=%d\n",
		res.extraCopies, res.handlerFailures, res.panics, res.connKills, res.sigkills, res.kafkaRestarts)
	fmt.Fprintf(stdout, "chaos: messages=%d effects=%d duplicates=%d lost=%d faults=%d\n",
		res.messages, res.effects, res.duplicates, res.lost, res.faults())
	if len(problems) > 0 {
		fmt.Fprintln(stderr, "chaos: FAILED: "+strings.Join(problems, "; "))
		return 1
	}
	return 0
}

// result is what the run counted.
type result struct {
	messages, effects, distinct, duplicates, lost, unexpected int64
	misrouted                                                 int64
	replayNew, replayed, leftInQueue                          int64
	extraCopies, handlerFailures, panics                      int64
	connKills, sigkills, kafkaRestarts                        int64
	missedFaults, workerProblems                              []string
	counted                                                   bool
}

func (r result) faults() int64 {
	return r.extraCopies + r.handlerFailures + r.connKills + r.sigkills + r.kafkaRestarts
}

func (r result) problems() []string {
	var p []string
	if !r.counted {
		return []string{"the effects could not be counted"}
	}
	if r.effects != r.messages {
		p = append(p, fmt.Sprintf("%d effects for %d messages", r.effects, r.messages))
	}
	if r.duplicates != 0 {
		p = append(p, fmt.Sprintf("%d messages applied more than once", r.duplicates))
	}
	if r.lost != 0 {
		p = append(p, fmt.Sprintf("%d messages never applied", r.lost))
	}
	if r.unexpected != 0 {
		p = append(p, fmt.Sprintf("%d rows for IDs that were never sent", r.unexpected))
	}
	if r.misrouted != 0 {
		p = append(p, fmt.Sprintf("%d messages applied from a source they were not sent to", r.misrouted))
	}
	if r.replayNew != 0 {
		p = append(p, fmt.Sprintf("the replay added %d effects", r.replayNew))
	}
	if r.leftInQueue != 0 {
		p = append(p, fmt.Sprintf("%d messages left in the queue", r.leftInQueue))
	}
	for _, f := range r.missedFaults {
		p = append(p, "fault not injected: "+f)
	}
	p = append(p, r.workerProblems...)
	return p
}
