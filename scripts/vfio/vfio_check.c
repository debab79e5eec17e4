/*
 * vfio_check: the harness's built-in VFIO smoke program (runs in the guest).
 *
 *   vfio_check [--link] BDF
 *
 * Opens the VFIO container and the device's group, checks the group is
 * viable, attaches a type1 IOMMU, maps and unmaps a DMA buffer, opens the
 * device, maps BAR0 and reads the igb CTRL/STATUS registers. With --link it
 * also brings the emulated igb's link up the way qemu wants it (restart PHY
 * autonegotiation through MDIC: BMCR |= ANENABLE|ANRESTART) and fails unless
 * STATUS.LU comes on within 5 s. Everything goes through VFIO, as the rbypass
 * driver will. Built static by harness.sh: gcc -static -O2.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define FAIL(...) do { printf("vfio-check: FAIL: " __VA_ARGS__); printf("\n"); exit(1); } while (0)
#define SAY(...) do { printf("vfio-check: " __VA_ARGS__); printf("\n"); fflush(stdout); } while (0)

/* igb registers (82576 datasheet) */
#define E1000_CTRL 0x0000
#define E1000_STATUS 0x0008
#define E1000_MDIC 0x0020
#define STATUS_FD (1u << 0)
#define STATUS_LU (1u << 1)
#define MDIC_OP_WRITE (1u << 26)
#define MDIC_OP_READ (2u << 26)
#define MDIC_READY (1u << 28)
#define MDIC_ERROR (1u << 30)
#define PHY_ADDR 1u
#define BMCR_ANENABLE 0x1000
#define BMCR_ANRESTART 0x0200

static volatile uint32_t *bar0;

static uint32_t rd(uint32_t off) { return bar0[off / 4]; }
static void wr(uint32_t off, uint32_t v) { bar0[off / 4] = v; }

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int mdic(uint32_t op, uint32_t reg, uint32_t data, uint32_t *out)
{
	wr(E1000_MDIC, op | (PHY_ADDR << 21) | (reg << 16) | (data & 0xffff));
	for (int i = 0; i < 10000; i++) {
		uint32_t v = rd(E1000_MDIC);
		if (v & MDIC_ERROR)
			return -1;
		if (v & MDIC_READY) {
			if (out)
				*out = v & 0xffff;
			return 0;
		}
		usleep(10);
	}
	return -1;
}

int main(int argc, char **argv)
{
	int want_link = 0;
	const char *bdf = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--link"))
			want_link = 1;
		else
			bdf = argv[i];
	}
	if (!bdf)
		FAIL("usage: vfio_check [--link] BDF");

	char path[PATH_MAX], link[PATH_MAX];
	snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/iommu_group", bdf);
	ssize_t n = readlink(path, link, sizeof link - 1);
	if (n < 0)
		FAIL("%s: %s (no IOMMU group: is the IOMMU on?)", path, strerror(errno));
	link[n] = 0;
	int group_id = atoi(strrchr(link, '/') + 1);

	int container = open("/dev/vfio/vfio", O_RDWR);
	if (container < 0)
		FAIL("open /dev/vfio/vfio: %s", strerror(errno));
	int api = ioctl(container, VFIO_GET_API_VERSION);
	if (api != VFIO_API_VERSION)
		FAIL("VFIO API version %d, expected %d", api, VFIO_API_VERSION);
	int iommu_type = ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) > 0 ? VFIO_TYPE1v2_IOMMU
			 : ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU) > 0 ? VFIO_TYPE1_IOMMU : 0;
	if (!iommu_type)
		FAIL("no type1 IOMMU support (vfio_iommu_type1 not loaded?)");

	snprintf(path, sizeof path, "/dev/vfio/%d", group_id);
	int group = open(path, O_RDWR);
	if (group < 0)
		FAIL("open %s: %s", path, strerror(errno));
	struct vfio_group_status gs = { .argsz = sizeof gs };
	if (ioctl(group, VFIO_GROUP_GET_STATUS, &gs))
		FAIL("VFIO_GROUP_GET_STATUS: %s", strerror(errno));
	if (!(gs.flags & VFIO_GROUP_FLAGS_VIABLE))
		FAIL("group %d is not viable (another device of the group is bound to a host driver)", group_id);
	if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container))
		FAIL("VFIO_GROUP_SET_CONTAINER: %s", strerror(errno));
	if (ioctl(container, VFIO_SET_IOMMU, iommu_type))
		FAIL("VFIO_SET_IOMMU: %s", strerror(errno));
	SAY("api %d, group %d viable, iommu type%s", api, group_id, iommu_type == VFIO_TYPE1v2_IOMMU ? "1v2" : "1");

	/* DMA map/unmap a 2 MiB buffer */
	size_t dma_len = 2 << 20;
	void *buf = mmap(NULL, dma_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		FAIL("mmap dma buffer: %s", strerror(errno));
	struct vfio_iommu_type1_dma_map map = {
		.argsz = sizeof map, .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.vaddr = (uintptr_t)buf, .iova = 0x10000000, .size = dma_len,
	};
	if (ioctl(container, VFIO_IOMMU_MAP_DMA, &map))
		FAIL("VFIO_IOMMU_MAP_DMA: %s", strerror(errno));
	struct vfio_iommu_type1_dma_unmap unmap = { .argsz = sizeof unmap, .iova = map.iova, .size = dma_len };
	if (ioctl(container, VFIO_IOMMU_UNMAP_DMA, &unmap))
		FAIL("VFIO_IOMMU_UNMAP_DMA: %s", strerror(errno));
	SAY("DMA map/unmap of %zu KiB at iova 0x%llx ok", dma_len >> 10, (unsigned long long)map.iova);

	int dev = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf);
	if (dev < 0)
		FAIL("VFIO_GROUP_GET_DEVICE_FD %s: %s", bdf, strerror(errno));
	struct vfio_device_info di = { .argsz = sizeof di };
	if (ioctl(dev, VFIO_DEVICE_GET_INFO, &di))
		FAIL("VFIO_DEVICE_GET_INFO: %s", strerror(errno));
	if (!(di.flags & VFIO_DEVICE_FLAGS_PCI))
		FAIL("not a PCI device");

	struct vfio_region_info cfg = { .argsz = sizeof cfg, .index = VFIO_PCI_CONFIG_REGION_INDEX };
	if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &cfg))
		FAIL("config region info: %s", strerror(errno));
	uint16_t ids[2], cmd;
	if (pread(dev, ids, 4, cfg.offset) != 4 || pread(dev, &cmd, 2, cfg.offset + 4) != 2)
		FAIL("config read: %s", strerror(errno));
	cmd |= 0x6; /* memory space + bus master */
	if (pwrite(dev, &cmd, 2, cfg.offset + 4) != 2)
		FAIL("config write: %s", strerror(errno));

	struct vfio_irq_info msix = { .argsz = sizeof msix, .index = VFIO_PCI_MSIX_IRQ_INDEX };
	if (ioctl(dev, VFIO_DEVICE_GET_IRQ_INFO, &msix))
		msix.count = 0;
	SAY("device %s: %04x:%04x, %u regions, %u irq indexes, %u MSI-X vectors, reset %s", bdf, ids[0], ids[1],
	    di.num_regions, di.num_irqs, msix.count, di.flags & VFIO_DEVICE_FLAGS_RESET ? "yes" : "no");

	struct vfio_region_info r0 = { .argsz = sizeof r0, .index = VFIO_PCI_BAR0_REGION_INDEX };
	if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &r0))
		FAIL("BAR0 region info: %s", strerror(errno));
	if (!(r0.flags & VFIO_REGION_INFO_FLAG_MMAP))
		FAIL("BAR0 is not mmap-able (flags 0x%x)", r0.flags);
	bar0 = mmap(NULL, r0.size, PROT_READ | PROT_WRITE, MAP_SHARED, dev, r0.offset);
	if (bar0 == MAP_FAILED)
		FAIL("mmap BAR0: %s", strerror(errno));
	uint32_t status = rd(E1000_STATUS);
	SAY("BAR0 %llu KiB mapped: CTRL 0x%08x STATUS 0x%08x", (unsigned long long)r0.size >> 10, rd(E1000_CTRL),
	    status);

	if (want_link) {
		double t0 = now();
		uint32_t bmcr = 0;
		if (mdic(MDIC_OP_READ, 0, 0, &bmcr))
			FAIL("MDIC read of PHY BMCR failed");
		if (mdic(MDIC_OP_WRITE, 0, bmcr | BMCR_ANENABLE | BMCR_ANRESTART, NULL))
			FAIL("MDIC write of PHY BMCR failed");
		while (!((status = rd(E1000_STATUS)) & STATUS_LU) && now() - t0 < 5)
			usleep(10000);
		if (!(status & STATUS_LU))
			FAIL("link still down 5 s after restarting autonegotiation (STATUS 0x%08x)", status);
		static const char *speeds[] = { "10", "100", "1000", "1000" };
		SAY("link up after %.2f s: %s Mb/s %s duplex (STATUS 0x%08x)", now() - t0, speeds[(status >> 6) & 3],
		    status & STATUS_FD ? "full" : "half", status);
	}
	munmap((void *)bar0, r0.size);
	close(dev);
	close(group);
	close(container);
	SAY("OK");
	return 0;
}
