package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/uuidforge/uuidforge/internal/testenv"
)

// The scale scenario runs on the clustered setups scripts/clusters.sh keeps
// on loopback, and only on those: its faults (a node stopped, a primary
// killed) are put back by that script.

// holdSetups waits until no test or other program uses the Redis Cluster
// and the RabbitMQ cluster, then keeps them for this run (see
// testenv.HoldSetup), and makes sure they are healthy. The locks are
// released at cleanup.
func (e *env) holdSetups(ctx context.Context) error {
	for _, v := range []string{testenv.EnvRedisCluster, testenv.EnvAMQPCluster, testenv.EnvAMQPClusterNodes} {
		if os.Getenv(v) != "" {
			return fmt.Errorf("%s is set: the scale scenario disrupts only the local setups of scripts/clusters.sh, which it can put back", v)
		}
	}
	for _, setup := range []string{testenv.SetupRedisCluster, testenv.SetupRabbitCluster} {
		began := time.Now()
		waiting := time.AfterFunc(time.Second, func() { e.logf("waiting until no test uses the %s setup", setup) })
		release, err := testenv.HoldSetup(ctx, setup)
		waiting.Stop()
		if err != nil {
			return err
		}
		e.onCleanup(release)
		if d := time.Since(began); d > time.Second {
			e.logf("the %s setup is ours after %v", setup, d.Round(100*time.Millisecond))
		}
	}
	// Healthy setups are left alone; a node left down is started again.
	return e.clusters(ctx, "start", "redis-cluster", "rabbitmq")
}

// clusters runs scripts/clusters.sh (-clusters) with args.
func (e *env) clusters(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", append([]string{e.opt.clustersScript}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", e.opt.clustersScript, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// rabbitCluster is the 3-node RabbitMQ cluster. Safe for concurrent use.
type rabbitCluster struct {
	urls, nodes []string
	ctl         string

	mu   sync.Mutex
	conn *amqp.Connection // the coordinator's, to any running node
	next int              // the node to try first when it must connect again
}

func newRabbitCluster(ctl string) *rabbitCluster {
	return &rabbitCluster{
		urls:  strings.Split(testenv.DefaultAMQPClusterURLs, ","),
		nodes: strings.Split(testenv.DefaultAMQPClusterNodes, ","),
		ctl:   ctl,
	}
}

// others returns the URLs of every node but i, starting after i.
func (r *rabbitCluster) others(i int) []string {
	var us []string
	for k := 1; k < len(r.urls); k++ {
		us = append(us, r.urls[(i+k)%len(r.urls)])
	}
	return us
}

// run runs rabbitmqctl against node i.
func (r *rabbitCluster) run(ctx context.Context, i int, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, r.ctl, append([]string{"-n", r.nodes[i], "-q"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("rabbitmqctl -n %s %s: %w: %s", r.nodes[i], strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// leader returns the node that leads queue, asking the nodes in turn.
func (r *rabbitCluster) leader(ctx context.Context, queue string) (int, error) {
	var errs []error
	for i := range r.nodes {
		out, err := r.run(ctx, i, "list_queues", "name", "leader", "--formatter", "json")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var qs []struct{ Name, Leader string }
		if err := json.Unmarshal([]byte(out), &qs); err != nil {
			errs = append(errs, fmt.Errorf("list_queues: %w", err))
			continue
		}
		for _, q := range qs {
			if q.Name != queue {
				continue
			}
			for k, n := range r.nodes {
				if n == q.Leader {
					return k, nil
				}
			}
			return 0, fmt.Errorf("queue %s: leader %q is not a node of the cluster", queue, q.Leader)
		}
		errs = append(errs, fmt.Errorf("queue %s not listed by %s", queue, r.nodes[i]))
	}
	return 0, errors.Join(errs...)
}

// stopNode stops the RabbitMQ application on node i: its clients are
// disconnected and its queue members stop.
func (r *rabbitCluster) stopNode(ctx context.Context, i int) error {
	_, err := r.run(ctx, i, "stop_app")
	return err
}

// startNode starts node i's application again and waits until it runs.
func (r *rabbitCluster) startNode(ctx context.Context, i int) error {
	if _, err := r.run(ctx, i, "start_app"); err != nil {
		return err
	}
	_, err := r.run(ctx, i, "await_startup")
	return err
}

// channel opens a channel on the coordinator's connection, connecting
// again (to the next node that answers) when it was lost.
func (r *rabbitCluster) channel() (*amqp.Channel, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn != nil && !r.conn.IsClosed() {
		if ch, err := r.conn.Channel(); err == nil {
			return ch, nil
		}
		_ = r.conn.Close()
	}
	r.conn = nil
	var errs []error
	for k := range r.urls {
		i := (r.next + k) % len(r.urls)
		conn, err := amqp.DialConfig(r.urls[i], amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", testenv.RedactURL(r.urls[i]), err))
			continue
		}
		ch, err := conn.Channel()
		if err != nil {
			_ = conn.Close()
			errs = append(errs, err)
			continue
		}
		r.conn, r.next = conn, i
		return ch, nil
	}
	return nil, fmt.Errorf("rabbitmq cluster: %w", errors.Join(errs...))
}

// queueLength is the number of messages ready in queue (all of them when
// no consumer is connected).
func (r *rabbitCluster) queueLength(queue string) (int64, error) {
	ch, err := r.channel()
	if err != nil {
		return 0, err
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	return int64(q.Messages), err
}

// deleteQueues deletes the run's queues and closes the connection.
func (r *rabbitCluster) deleteQueues(queues ...string) {
	if ch, err := r.channel(); err == nil {
		for _, q := range queues {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		_ = ch.Close()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn != nil {
		_ = r.conn.Close()
		r.conn = nil
	}
}

// redisCluster is the 6-node Redis Cluster (3 primaries with a replica
// each).
type redisCluster struct {
	addrs []string
}

func newRedisCluster() *redisCluster {
	return &redisCluster{addrs: strings.Split(testenv.DefaultRedisClusterAddrs, ",")}
}

// clusterNode is a line of CLUSTER NODES.
type clusterNode struct {
	id, addr, master string // master: the primary's ID, for a replica
	primary, failed  bool
	slots            [][2]int // a primary's slot ranges
}

// nodes reads CLUSTER NODES from the first node that answers, skipping
// skip.
func (c *redisCluster) nodes(ctx context.Context, skip string) ([]clusterNode, error) {
	var errs []error
	for _, a := range c.addrs {
		if a == skip {
			continue
		}
		rdb := redis.NewClient(&redis.Options{Addr: a, DialTimeout: time.Second, MaxRetries: -1})
		out, err := rdb.ClusterNodes(ctx).Result()
		var state string
		if err == nil {
			var info string
			info, err = rdb.ClusterInfo(ctx).Result()
			state = infoValue(info, "cluster_state")
		}
		_ = rdb.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a, err))
			continue
		}
		if state != "ok" {
			errs = append(errs, fmt.Errorf("%s: cluster_state %s", a, state))
			continue
		}
		var ns []clusterNode
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 8 {
				continue
			}
			addr, _, _ := strings.Cut(f[1], "@")
			flags := "," + f[2] + ","
			n := clusterNode{
				id: f[0], addr: addr, master: strings.Trim(f[3], "-"),
				primary: strings.Contains(flags, ",master,"),
				failed:  strings.Contains(flags, ",fail,") || strings.Contains(flags, ",fail?,"),
			}
			for _, r := range f[8:] { // "0-5460" or "5461"; "[...]" while a slot migrates
				lo, hi, isRange := strings.Cut(r, "-")
				a, errA := strconv.Atoi(lo)
				b, errB := strconv.Atoi(hi)
				if !isRange {
					b, errB = a, errA
				}
				if errA == nil && errB == nil {
					n.slots = append(n.slots, [2]int{a, b})
				}
			}
			ns = append(ns, n)
		}
		return ns, nil
	}
	return nil, errors.Join(errs...)
}

// killPrimary kills the primary at index k (modulo the number of
// primaries, in the order of CLUSTER NODES) with SIGKILL and waits until
// its replica has taken over its slots; it returns both addresses.
func (c *redisCluster) killPrimary(ctx context.Context, k int) (old, promoted string, err error) {
	ns, err := c.nodes(ctx, "")
	if err != nil {
		return "", "", err
	}
	var primaries []clusterNode
	for _, n := range ns {
		if n.primary && !n.failed {
			primaries = append(primaries, n)
		}
	}
	if len(primaries) == 0 {
		return "", "", errors.New("redis cluster: no primary")
	}
	victim := primaries[k%len(primaries)]
	var replica string
	for _, n := range ns {
		if n.master == victim.id && !n.failed {
			replica = n.id
		}
	}
	if replica == "" {
		return "", "", fmt.Errorf("redis cluster: primary %s has no replica", victim.addr)
	}
	if host, _, _ := net.SplitHostPort(victim.addr); host != "127.0.0.1" && host != "localhost" {
		return "", "", fmt.Errorf("redis cluster: primary %s is not on this machine", victim.addr)
	}
	rdb := redis.NewClient(&redis.Options{Addr: victim.addr, DialTimeout: time.Second, MaxRetries: -1})
	info, err := rdb.Info(ctx, "server").Result()
	_ = rdb.Close()
	if err != nil {
		return "", "", fmt.Errorf("redis cluster: %s: %w", victim.addr, err)
	}
	pid, err := strconv.Atoi(infoValue(info, "process_id"))
	if err != nil || pid <= 1 {
		return "", "", fmt.Errorf("redis cluster: %s: no process_id in INFO", victim.addr)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return "", "", fmt.Errorf("redis cluster: kill %s (pid %d): %w", victim.addr, pid, err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		ns, err := c.nodes(ctx, victim.addr)
		if err == nil {
			for _, n := range ns {
				if n.id == replica && n.primary && !n.failed {
					return victim.addr, n.addr, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return victim.addr, "", fmt.Errorf("redis cluster: no replica of %s promoted within a minute (%v)", victim.addr, err)
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return victim.addr, "", ctx.Err()
		}
	}
}

// deleteKeys deletes the keys under prefix on every primary.
func (c *redisCluster) deleteKeys(ctx context.Context, prefix string) (int64, error) {
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.addrs, DialTimeout: time.Second})
	defer client.Close()
	var mu sync.Mutex
	var n int64
	err := client.ForEachMaster(ctx, func(ctx context.Context, rdb *redis.Client) error {
		iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		var keys []string
		del := func() error {
			if len(keys) == 0 {
				return nil
			}
			// Each key is alone in its slot's hash tag: delete one by one
			// in a pipeline on the node that holds them.
			p := rdb.Pipeline()
			for _, k := range keys {
				p.Del(ctx, k)
			}
			_, err := p.Exec(ctx)
			mu.Lock()
			n += int64(len(keys))
			mu.Unlock()
			keys = keys[:0]
			return err
		}
		for iter.Next(ctx) {
			if keys = append(keys, iter.Val()); len(keys) == 500 {
				if err := del(); err != nil {
					return err
				}
			}
		}
		if err := iter.Err(); err != nil {
			return err
		}
		return del()
	})
	return n, err
}

// infoValue returns the value of name in Redis INFO-style text.
func infoValue(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// replicated writes a key that primary addr serves and reports whether one
// replica acknowledged it within 200 ms (WAIT), as the store's completions
// need with WithReplicaAcks(1, ...). The key is deleted again.
func (c *redisCluster) replicated(ctx context.Context, addr, prefix string) (bool, error) {
	ns, err := c.nodes(ctx, "")
	if err != nil {
		return false, err
	}
	var slots [][2]int
	for _, n := range ns {
		if n.addr == addr && n.primary {
			slots = n.slots
		}
	}
	if len(slots) == 0 {
		return false, fmt.Errorf("redis cluster: %s serves no slots", addr)
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, MaxRetries: -1})
	defer rdb.Close()
	for i := range 1000 {
		key := fmt.Sprintf("%sprobe:%d", prefix, i)
		slot, err := rdb.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			return false, err
		}
		for _, r := range slots {
			if int(slot) < r[0] || int(slot) > r[1] {
				continue
			}
			var wait *redis.Cmd
			_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, key, 1, time.Minute)
				wait = p.Do(ctx, "wait", 1, 200)
				p.Del(ctx, key)
				return nil
			})
			if err != nil {
				return false, err
			}
			n, err := wait.Int64()
			return n >= 1, err
		}
	}
	return false, fmt.Errorf("redis cluster: no key found for the slots of %s", addr)
}
