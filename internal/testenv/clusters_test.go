package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
)

// TestRedisCluster checks the Redis Cluster: healthy, 3 primaries with a
// replica each, and keys spread over several primaries.
func TestRedisCluster(t *testing.T) {
	addrs := RedisClusterAddrs(t)
	ctx := Context(t, 30*time.Second)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer c.Close()
	info, err := c.ClusterInfo(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"cluster_state": "ok", "cluster_slots_ok": "16384", "cluster_size": "3", "cluster_known_nodes": "6"} {
		if got := infoField(info, name); got != want {
			t.Errorf("CLUSTER INFO %s = %q, want %q", name, got, want)
		}
	}
	prefix := Name(t, "k")
	primaries := map[string]bool{}
	for i := range 30 {
		key := fmt.Sprintf("%s:%d", prefix, i)
		if err := c.Set(ctx, key, i, time.Minute).Err(); err != nil {
			t.Fatalf("set %s: %v", key, err)
		}
		if n, err := c.Get(ctx, key).Int(); err != nil || n != i {
			t.Fatalf("get %s = %d, %v", key, n, err)
		}
		slot, err := c.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		primaries[fmt.Sprint(slot*3/16384)] = true // which third of the slots
	}
	if len(primaries) < 2 {
		t.Errorf("30 keys all in one third of the slots")
	}
}

// TestRedisSentinelFailover kills the primary: the Sentinels promote the
// replica within seconds, a write acknowledged by the replica before the kill
// is still there, a failover client writes again, and the old primary comes
// back as a replica of the new one.
func TestRedisSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a Redis server: -short")
	}
	s := RedisSentinel(t)
	ctx := Context(t, 2*time.Minute)
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: s.Master, SentinelAddrs: s.Addrs})
	defer c.Close()
	key := Name(t, "k")
	if err := c.Set(ctx, key, "before", 10*time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n < 1 {
		t.Fatalf("WAIT for the replica: %d, %v", n, err)
	}

	start := time.Now()
	old, primary := s.KillPrimary(t)
	t.Logf("primary %s killed; %s promoted after %v", old, primary, time.Since(start).Round(10*time.Millisecond))

	var got string
	var err error
	for ctx.Err() == nil {
		if got, err = c.Get(ctx, key).Result(); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got != "before" {
		t.Fatalf("after the failover: %q, %v; want the replicated value", got, err)
	}
	if err := c.Set(ctx, key, "after", 10*time.Minute).Err(); err != nil {
		t.Fatalf("write after the failover: %v", err)
	}

	s.Restore(t)
	r := redis.NewClient(&redis.Options{Addr: old})
	defer r.Close()
	repl, err := r.Info(ctx, "replication").Result()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(primary)
	if infoField(repl, "role") != "slave" || infoField(repl, "master_port") != port || infoField(repl, "master_link_status") != "up" {
		t.Fatalf("the old primary %s is not a replica of %s:\n%s", old, primary, repl)
	}
	if v, err := r.Get(ctx, key).Result(); err != nil || v != "after" {
		t.Fatalf("the old primary, now a replica, has %q, %v", v, err)
	}
}

// quorumQueue is a queue as rabbitmqctl list_queues shows it.
type quorumQueue struct {
	Name, Type, Leader string
	Members, Online    []string
}

func queueInfo(ctx context.Context, rc *RabbitNodes, node int, name string) (quorumQueue, error) {
	out, err := rc.Ctl(ctx, node, "list_queues", "name", "type", "members", "leader", "online", "--formatter", "json")
	if err != nil {
		return quorumQueue{}, err
	}
	var qs []quorumQueue
	if err := json.Unmarshal([]byte(out), &qs); err != nil {
		return quorumQueue{}, fmt.Errorf("list_queues: %w: %s", err, out)
	}
	for _, q := range qs {
		if q.Name == name {
			return q, nil
		}
	}
	return quorumQueue{}, fmt.Errorf("queue %s not listed", name)
}

// TestRabbitClusterQuorumQueue declares a quorum queue on the 3-node cluster:
// it has a member on every node, and with its leader's node stopped it still
// takes (confirmed) and gives messages through another node.
func TestRabbitClusterQuorumQueue(t *testing.T) {
	if testing.Short() {
		t.Skip("stops a RabbitMQ node: -short")
	}
	rc := RabbitCluster(t)
	if len(rc.Nodes) != 3 {
		t.Fatalf("%d nodes, want 3", len(rc.Nodes))
	}
	ctx := Context(t, 4*time.Minute)
	q := Name(t, "qq")
	admin, err := amqp.Dial(rc.URLs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ach, err := admin.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ach.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if conn, err := amqp.Dial(rc.URLs[0]); err == nil {
			if ch, err := conn.Channel(); err == nil {
				_, _ = ch.QueueDelete(q, false, false, false)
			}
			conn.Close()
		}
	})
	info, err := queueInfo(ctx, rc, 0, q)
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != "quorum" || !sameNodes(info.Members, rc.Nodes) {
		t.Fatalf("queue %+v: want a quorum queue with a member on each of %v", info, rc.Nodes)
	}
	stop := slices.Index(rc.Nodes, info.Leader)
	if stop < 0 {
		t.Fatalf("leader %q is not a node of the cluster", info.Leader)
	}
	other := (stop + 1) % len(rc.Nodes)

	conn, err := amqp.Dial(rc.URLs[other])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	publish := func(body string) {
		t.Helper()
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, true, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(body)})
		if err != nil {
			t.Fatalf("publish %s: %v", body, err)
		}
		if ok, err := dc.WaitContext(ctx); err != nil || !ok {
			t.Fatalf("publish %s: confirmed %v, %v", body, ok, err)
		}
	}
	publish("one")

	rc.StopNode(t, stop)
	publish("two") // waits for the remaining two members to elect a leader

	var got []string
	for len(got) < 2 && ctx.Err() == nil {
		d, ok, err := ch.Get(q, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			got = append(got, string(d.Body))
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if !slices.Equal(got, []string{"one", "two"}) {
		t.Fatalf("got %q, want [one two]", got)
	}
	info, err = queueInfo(ctx, rc, other, q)
	if err != nil {
		t.Fatal(err)
	}
	if !sameNodes(info.Members, rc.Nodes) || len(info.Online) != 2 || info.Leader == rc.Nodes[stop] {
		t.Fatalf("with %s stopped: %+v", rc.Nodes[stop], info)
	}

	rc.StartNode(t, stop)
	for {
		info, err = queueInfo(ctx, rc, other, q)
		if err == nil && sameNodes(info.Online, rc.Nodes) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the member on %s did not come back: %+v, %v", rc.Nodes[stop], info, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func sameNodes(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestKafkaMovePartitionLeader moves a partition's leader to another broker of
// an in-process 3-broker cluster: kafka-go sees the new leader in the
// metadata and keeps writing and reading.
func TestKafkaMovePartitionLeader(t *testing.T) {
	k := InProcessKafka(t, KafkaNumBrokers(3))
	topic := Name(t, "topic")
	ctx := Context(t, 30*time.Second)
	if err := k.CreateTopic(ctx, topic, 1); err != nil {
		t.Fatal(err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers()...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	write := func(v string) {
		t.Helper()
		var err error
		for range 50 {
			if err = w.WriteMessages(ctx, kafka.Message{Value: []byte(v)}); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("write %s: %v", v, err)
	}
	write("v1")

	// A transport of its own: the default one caches metadata.
	client := &kafka.Client{Addr: kafka.TCP(k.Brokers()...), Transport: &kafka.Transport{}}
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatal(err)
	}
	from := meta.Topics[0].Partitions[0].Leader.ID
	to := (from + 1) % 3
	if err := k.MoveLeader(topic, 0, to); err != nil {
		t.Fatal(err)
	}
	// A new transport again: this one cached the old leader.
	client = &kafka.Client{Addr: kafka.TCP(k.Brokers()...), Transport: &kafka.Transport{}}
	meta, err = client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatal(err)
	}
	if got := meta.Topics[0].Partitions[0].Leader.ID; got != int(to) {
		t.Fatalf("leader of %s/0 is broker %d after moving it from %d to %d", topic, got, from, to)
	}
	write("v2") // the writer's first try goes to the old leader

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: k.Brokers(), Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	for _, want := range []string{"v1", "v2"} {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Value) != want {
			t.Fatalf("read %q, want %q", m.Value, want)
		}
	}
}
