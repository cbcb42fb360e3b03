package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/execlaw/execlaw/internal/image"
	"github.com/execlaw/execlaw/internal/sandbox/process"
	"github.com/execlaw/execlaw/internal/version"
)

const imageUsage = `Usage: execlaw image <build|list|verify|prune> [flags]

  build    build or update a guest image (kernel, initramfs, root filesystem);
           with --oci FILE, also write it as an OCI image archive for pods
  list     show the images built, with their versions and sizes
  verify   rehash every file of every image against its manifest
  prune    delete files no image refers to any more
`

func imageCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, imageUsage)
		return errors.New("no image command given")
	}
	fs := flag.NewFlagSet("execlaw image "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", envOr(getenv, "EXECLAW_DATA_DIR", "./data"), "data directory (EXECLAW_DATA_DIR)")
	switch args[0] {
	case "build":
		var o image.BuildOptions
		fs.StringVar(&o.Profile, "profile", "dev", "root filesystem profile: dev or minimal")
		fs.StringVar(&o.Name, "name", "", "image name (default: the profile)")
		fs.StringVar(&o.Distro, "distro", "bookworm", "distribution: bookworm, or noble (Ubuntu) when its mirror answers")
		fs.StringVar(&o.Mirror, "mirror", "", "package mirror (default: the distribution's)")
		fs.StringVar(&o.GuestBinary, "guest-bin", envOr(getenv, "EXECLAW_GUEST_BIN", ""), "static execlaw-guest for the initramfs (default: next to execlaw)")
		fs.StringVar(&o.KernelSource, "kernel-source", "", "where the guest kernel comes from: "+image.KernelBuilt+
			" (compiled here from Debian's "+image.KernelSourcePackage+" with everything built in, no modules; the default) or "+
			image.KernelDebian+" (Debian's linux-image-amd64 and its modules)")
		fs.IntVar(&o.KernelJobs, "kernel-jobs", 0, "compiles a kernel build runs at once (default: one per CPU)")
		fs.StringVar(&o.KernelFile, "kernel", "", "use this bzImage instead")
		fs.StringVar(&o.ModulesDir, "modules", "", "with --kernel: its lib/modules/<release> directory")
		fs.StringVar(&o.KernelDeb, "kernel-deb", "", "use this kernel .deb instead of downloading Debian's")
		fs.BoolVar(&o.Force, "force", false, "rebuild everything")
		ociPath := fs.String("oci", "", "also write the image as an OCI image archive to this file, for Kubernetes pods "+
			"(ctr -n k8s.io images import, podman load, docker load); an unchanged image is not rebuilt")
		ociTag := fs.String("oci-tag", "", "with --oci: the image's name (default "+image.OCIRepository+":<short hash>; "+
			"a name without a tag gets the short hash)")
		agents := fs.String("agents", "", "agent CLIs to install besides the built-in agent: claude-code")
		fs.StringVar(&o.Agents.ClaudeCodeVersion, "claude-code-version", image.ClaudeCodeVersion, "the @anthropic-ai/claude-code release to install")
		fs.StringVar(&o.Agents.Nullclaw, "nullclaw", "", "install nullclaw from this file or http(s) URL")
		fs.StringVar(&o.Agents.NullclawSHA256, "nullclaw-sha256", "", "the SHA-256 the nullclaw binary must have")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		// Refuse a bad --oci or --oci-tag now, not after a build of minutes.
		if *ociTag != "" && *ociPath == "" {
			return errors.New("--oci-tag goes with --oci FILE")
		}
		if *ociPath != "" {
			if err := image.CheckOCIPath(*ociPath); err != nil {
				return fmt.Errorf("--oci: %w", err)
			}
			if err := image.CheckOCIRef(*ociTag); err != nil {
				return fmt.Errorf("--oci-tag: %w", err)
			}
		}
		spec, err := image.ParseAgents(*agents)
		if err != nil {
			return err
		}
		o.Agents.ClaudeCode = spec.ClaudeCode
		if o.GuestBinary == "" {
			var err error
			if o.GuestBinary, err = process.FindGuestBinary(getenv); err != nil {
				return err
			}
		}
		o.DataDir, o.Version, o.Out = *dataDir, version.String(), stdout
		m, err := image.Build(ctx, o)
		if err != nil || *ociPath == "" {
			return err
		}
		st, err := image.NewStore(*dataDir)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout)
		img, err := st.WriteOCI(ctx, m, image.OCIOptions{
			Path: *ociPath, Ref: *ociTag, GuestBinary: o.GuestBinary, Version: o.Version, Out: stdout,
		})
		if err != nil {
			return fmt.Errorf("--oci: %w", err)
		}
		fmt.Fprintf(stdout, "  load it with `ctr -n k8s.io images import %s` (a cluster node), `podman load -i %[1]s` or `docker load -i %[1]s`;\n"+
			"  a pod names it %s, with imagePullPolicy: Never or IfNotPresent\n", img.Path, img.Ref)
		return nil
	case "list", "verify", "prune":
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		st, err := image.NewStore(*dataDir)
		if err != nil {
			return err
		}
		if args[0] == "prune" {
			freed, err := st.Prune()
			fmt.Fprintf(stdout, "freed %.1f MiB\n", float64(freed)/(1<<20))
			return err
		}
		ms, err := st.List()
		if err != nil {
			return err
		}
		if len(ms) == 0 {
			fmt.Fprintf(stdout, "no images in %s; run `execlaw image build`\n", filepath.Join(*dataDir, "images"))
			return nil
		}
		bad := 0
		for _, m := range ms {
			printManifest(stdout, m)
			if args[0] == "verify" {
				errs := st.Verify(m)
				for _, e := range errs {
					fmt.Fprintf(stdout, "  FAILED: %v\n", e)
				}
				if len(errs) == 0 {
					fmt.Fprintln(stdout, "  verified: every file matches its sha256")
				}
				bad += len(errs)
			}
		}
		if bad > 0 {
			return fmt.Errorf("%d image files failed verification; rebuild with `execlaw image build --force`", bad)
		}
		return nil
	}
	fmt.Fprint(stderr, imageUsage)
	return fmt.Errorf("unknown image command %q", args[0])
}

func printManifest(w io.Writer, m image.Manifest) {
	kernel := m.Kernel.Version
	if m.KernelSource != "" {
		kernel += " (" + m.KernelSource + ")"
	}
	fmt.Fprintf(w, "%s: %s %s, kernel %s, built %s by execlaw %s\n", m.Name, m.Distro, m.Profile, kernel,
		m.BuiltAt.Format("2006-01-02 15:04"), m.ExecLawVersion)
	if len(m.Agents) > 0 {
		fmt.Fprintf(w, "  agents     %s\n", strings.Join(m.Agents, ", "))
	}
	for _, c := range []struct {
		name string
		c    image.Component
	}{{"kernel", m.Kernel}, {"vmlinux", m.Vmlinux}, {"initramfs", m.Initramfs}, {"rootfs", m.Rootfs}} {
		extra := ""
		if n := len(c.c.Items); n > 0 {
			extra = fmt.Sprintf(", %d %s", n, map[bool]string{true: "modules", false: "packages"}[c.name == "initramfs"])
		}
		fmt.Fprintf(w, "  %-10s %8.1f MiB  sha256:%s%s\n", c.name, float64(c.c.Size)/(1<<20), c.c.SHA256[:min(16, len(c.c.SHA256))], extra)
	}
}

func envOr(getenv func(string) string, name, def string) string {
	if v := strings.TrimSpace(getenv(name)); v != "" {
		return v
	}
	return def
}
