/* virtio_abuse: a hostile driver on every virtio-mmio device rvvmm gives it, then a good one.
 * Per device, on its first queue: rings outside RAM, a descriptor chain that loops, an avail
 * index far past the queue's size, a storm of notifications with nothing available,
 * DRIVER_OK without FEATURES_OK, a reset while a request is in flight. After each, the status
 * register says what the device made of it (0x40: it wants a reset). Then each device is
 * brought up properly and must still serve a good request (rng: bytes; blk: sector 0 read;
 * console and net: a buffer sent). rvvmm must neither crash nor hang nor flood its log. */
#include "lib.h"

#define SLOT(n) (0x10001000UL + (n) * 0x1000UL)
#define SLOTS 8
#define MAGIC_VALUE 0x74726976

#define R_MAGIC 0x00
#define R_DEVICE_ID 0x08
#define R_DEV_FEATURES 0x10
#define R_DEV_FEATURES_SEL 0x14
#define R_DRV_FEATURES 0x20
#define R_DRV_FEATURES_SEL 0x24
#define R_QUEUE_SEL 0x30
#define R_QUEUE_NUM_MAX 0x34
#define R_QUEUE_NUM 0x38
#define R_QUEUE_READY 0x44
#define R_QUEUE_NOTIFY 0x50
#define R_INT_STATUS 0x60
#define R_INT_ACK 0x64
#define R_STATUS 0x70
#define R_DESC 0x80
#define R_AVAIL 0x90
#define R_USED 0xa0

#define S_ACK 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define S_NEEDS_RESET 0x40

#define D_NEXT 1
#define D_WRITE 2

/* Rings and buffers: a free MiB below the guest's image (loaded at RAM + 2 MiB). */
#define RING (RAM_BASE + 0x100000UL)
#define DESC_AT (RING)
#define AVAIL_AT (RING + 0x1000)
#define USED_AT (RING + 0x2000)
#define DATA_AT (RING + 0x4000)
#define QSIZE 8

struct desc { u64 addr; u32 len; u16 flags; u16 next; };

static u32 r32(u64 base, u64 off) { return mmio_read(u32, base + off); }
static void w32(u64 base, u64 off, u32 v) { mmio_write(u32, base + off, v); }

static inline u64 rdtime(void)
{
    u64 t;
    asm volatile("rdtime %0" : "=r"(t));
    return t;
}

static void fence(void) { __sync_synchronize(); }

static void clear_rings(void)
{
    memset((void *)RING, 0, 0x8000);
}

/* Acknowledge, accept VERSION_1 only, optionally FEATURES_OK, set up queue `q` at the given
 * rings, and set DRIVER_OK. */
static void bring_up(u64 base, u32 q, u64 desc, u64 avail, u64 used, int features_ok)
{
    w32(base, R_STATUS, 0);
    w32(base, R_STATUS, S_ACK);
    w32(base, R_STATUS, S_ACK | S_DRIVER);
    w32(base, R_DRV_FEATURES_SEL, 0);
    w32(base, R_DRV_FEATURES, 0);
    w32(base, R_DRV_FEATURES_SEL, 1);
    w32(base, R_DRV_FEATURES, 1); /* VERSION_1 */
    u32 s = S_ACK | S_DRIVER;
    if (features_ok) {
        s |= S_FEATURES_OK;
        w32(base, R_STATUS, s);
    }
    w32(base, R_QUEUE_SEL, q);
    w32(base, R_QUEUE_NUM, QSIZE);
    w32(base, R_DESC, (u32)desc);
    w32(base, R_DESC + 4, (u32)(desc >> 32));
    w32(base, R_AVAIL, (u32)avail);
    w32(base, R_AVAIL + 4, (u32)(avail >> 32));
    w32(base, R_USED, (u32)used);
    w32(base, R_USED + 4, (u32)(used >> 32));
    w32(base, R_QUEUE_READY, 1);
    w32(base, R_STATUS, s | S_DRIVER_OK);
}

static volatile struct desc *descs(void) { return (volatile struct desc *)DESC_AT; }
static volatile u16 *avail(void) { return (volatile u16 *)AVAIL_AT; }
static volatile u16 *used_idx(void) { return (volatile u16 *)(USED_AT + 2); }

static void offer(u16 head, u16 idx)
{
    avail()[2 + (idx - 1) % QSIZE] = head;
    fence();
    avail()[1] = idx;
    fence();
}

/* Waits up to ~2 s (the timebase is 10 MHz) for the used index to reach `want`. */
static int wait_used(u16 want)
{
    u64 t0 = rdtime();
    while (rdtime() - t0 < 20000000UL) {
        fence();
        if (*used_idx() == want) {
            return 1;
        }
    }
    return 0;
}

static void said(u64 base, u32 id, const char *what)
{
    puts_("abuse: id ");
    put_dec(id);
    puts_(": ");
    puts_(what);
    print(", status ", r32(base, R_STATUS));
    w32(base, R_INT_ACK, r32(base, R_INT_STATUS));
}

/* Fresh rings on queue 0 (FEATURES_OK set or not), one chain of one descriptor with `flags`
 * offered, the queue notified. */
static void post_one(u64 base, u16 flags, int features_ok)
{
    clear_rings();
    bring_up(base, 0, DESC_AT, AVAIL_AT, USED_AT, features_ok);
    descs()[0] = (struct desc){ DATA_AT, 64, flags, 0 };
    offer(0, 1);
    w32(base, R_QUEUE_NOTIFY, 0);
}

static void abuse(u64 base, u32 id)
{
    /* Rings outside RAM. */
    clear_rings();
    bring_up(base, 0, 0x400000000000UL, 0x400000001000UL, 0x400000002000UL, 1);
    w32(base, R_QUEUE_NOTIFY, 0);
    said(base, id, "rings outside RAM");

    /* A descriptor that chains to itself. */
    post_one(base, D_NEXT | D_WRITE, 1);
    wait_used(1);
    said(base, id, "descriptor loop");

    /* The avail index far past the queue's size. */
    clear_rings();
    bring_up(base, 0, DESC_AT, AVAIL_AT, USED_AT, 1);
    descs()[0] = (struct desc){ DATA_AT, 64, D_WRITE, 0 };
    fence();
    avail()[1] = 0x7000;
    fence();
    w32(base, R_QUEUE_NOTIFY, 0);
    wait_used(1);
    said(base, id, "avail index leap");

    /* A notification storm with nothing available. */
    clear_rings();
    bring_up(base, 0, DESC_AT, AVAIL_AT, USED_AT, 1);
    for (int i = 0; i < 20000; i++) {
        w32(base, R_QUEUE_NOTIFY, i & 1);
    }
    said(base, id, "20000 notifications, nothing available");

    /* DRIVER_OK without FEATURES_OK. */
    post_one(base, D_WRITE, 0);
    said(base, id, "DRIVER_OK before FEATURES_OK");

    /* A reset while a request is in flight. */
    post_one(base, D_WRITE, 1);
    w32(base, R_STATUS, 0);
    said(base, id, "reset mid-request");
}

/* A good request on a freshly brought-up device; returns whether it was served. */
static int serve(u64 base, u32 id)
{
    clear_rings();
    u32 q = (id == 1 || id == 3) ? 1 : 0; /* net and console: the transmit queue */
    bring_up(base, q, DESC_AT, AVAIL_AT, USED_AT, 1);
    u8 *data = (u8 *)DATA_AT;
    switch (id) {
    case 4: /* rng: fill 32 bytes */
        descs()[0] = (struct desc){ DATA_AT, 32, D_WRITE, 0 };
        break;
    case 2: /* blk: read sector 0 (header, 512 bytes, status) */
        memset(data, 0, 16);
        data[0x300] = 0xff;
        descs()[0] = (struct desc){ DATA_AT, 16, D_NEXT, 1 };
        descs()[1] = (struct desc){ DATA_AT + 0x100, 512, D_NEXT | D_WRITE, 2 };
        descs()[2] = (struct desc){ DATA_AT + 0x300, 1, D_WRITE, 0 };
        break;
    case 3: /* console: send a line */
        memcpy(data, "abuse: console still writes\n", 28);
        descs()[0] = (struct desc){ DATA_AT, 28, 0, 0 };
        break;
    default: /* net: a 12-byte header and a 60-byte broadcast frame */
        memset(data, 0, 72);
        memset(data + 12, 0xff, 6);
        descs()[0] = (struct desc){ DATA_AT, 72, 0, 0 };
        break;
    }
    offer(0, 1);
    w32(base, R_QUEUE_NOTIFY, q);
    if (!wait_used(1)) {
        return 0;
    }
    return id != 2 || data[0x300] == 0;
}

void main(u64 hartid, u64 dtb)
{
    (void)hartid;
    (void)dtb;
    int devices = 0, served = 0;
    for (u64 n = 0; n < SLOTS; n++) {
        u64 base = SLOT(n);
        if (r32(base, R_MAGIC) != MAGIC_VALUE || r32(base, R_DEVICE_ID) == 0) {
            continue;
        }
        u32 id = r32(base, R_DEVICE_ID);
        devices++;
        abuse(base, id);
        if (serve(base, id)) {
            served++;
            puts_("abuse: id ");
            put_dec(id);
            puts_(": still serves a good request\n");
        } else {
            puts_("abuse: id ");
            put_dec(id);
            puts_(": FAILED a good request\n");
        }
        w32(base, R_STATUS, 0);
    }
    puts_("abuse: devices ");
    put_dec(devices);
    puts_(", served ");
    put_dec(served);
    putc_('\n');
    check(devices > 0 && served == devices, 70, "every device serves after the abuse", served);
    puts_("PASS virtio_abuse\n");
    shutdown();
}
