package redisstore_test

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/uuidforge/uuidforge/dedupe"
	"github.com/uuidforge/uuidforge/dedupe/dedupetest"
	"github.com/uuidforge/uuidforge/dedupe/redisstore"
	"github.com/uuidforge/uuidforge/internal/testenv"
)

// startCluster starts a Redis Cluster of three masters (redis-server
// processes on free ports, stopped when t ends) and returns a client of it.
func startCluster(t *testing.T) *redis.ClusterClient {
	t.Helper()
	server, cli := testenv.Tool(t, "redis-server"), testenv.Tool(t, "redis-cli")
	dir := t.TempDir()
	var addrs []string
	for range 3 {
		port := strconv.Itoa(freePort(t))
		cmd := exec.Command(server, "--port", port, "--bind", "127.0.0.1", "--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes-"+port+".conf"), "--dir", dir,
			"--save", "", "--appendonly", "no", "--protected-mode", "no")
		if err := cmd.Start(); err != nil {
			testenv.Unavailable(t, "redis-server", err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		addrs = append(addrs, "127.0.0.1:"+port)
	}
	ctx := testenv.Context(t, 30*time.Second)
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		for c.Ping(ctx).Err() != nil {
			if ctx.Err() != nil {
				t.Fatalf("redis-server %s did not start", a)
			}
			time.Sleep(20 * time.Millisecond)
		}
		_ = c.Close()
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	if out, err := exec.CommandContext(ctx, cli, append(args, "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { _ = client.Close() })
	for {
		info, err := client.ClusterInfo(ctx).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("cluster not ready: %v %s", err, info)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return client
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

var clusterPrefix atomic.Int64

// TestCluster runs the conformance suite, batches included, on a Redis
// Cluster, where the keys of one batch live on different nodes: each
// script touches one key, and go-redis splits the pipeline by node.
func TestCluster(t *testing.T) {
	client := startCluster(t)
	newClusterStore := func(t *testing.T) *redisstore.Store {
		s, err := redisstore.New(client, redisstore.WithPrefix(fmt.Sprintf("c%d:", clusterPrefix.Add(1))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	t.Run("spread", func(t *testing.T) {
		s := newClusterStore(t)
		ctx := testenv.Context(t, 10*time.Second)
		keys := make([]dedupe.Key, 32)
		for i := range keys {
			keys[i] = dedupetest.NewKey("cluster")
		}
		claims, err := s.ClaimBatch(ctx, keys, time.Minute)
		if err != nil {
			t.Fatalf("ClaimBatch across slots: %v", err)
		}
		nodes := map[string]bool{}
		for i, c := range claims {
			if !c.Acquired() {
				t.Fatalf("claim %d = %s", i, c.Status)
			}
			slot, err := client.ClusterKeySlot(ctx, s.RedisKey(c.Key)).Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range client.ClusterSlots(ctx).Val() {
				if int(slot) >= r.Start && int(slot) <= r.End {
					nodes[r.Nodes[0].Addr] = true
				}
			}
		}
		if len(nodes) < 2 {
			t.Fatalf("32 keys landed on %d node(s); the test wants a batch spread over several", len(nodes))
		}
		errs, err := s.CompleteBatch(ctx, claims, 0)
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range errs {
			if e != nil {
				t.Fatalf("complete %d: %v", i, e)
			}
		}
	})
	t.Run("conformance", func(t *testing.T) {
		dedupetest.Run(t, dedupetest.Options{
			NewStore:    func(t *testing.T) dedupe.Store { return newClusterStore(t) },
			Forever:     true,
			MinLease:    time.Millisecond,
			ErrorPrefix: "redisstore: ",
		})
	})
}
