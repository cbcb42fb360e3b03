package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/execlaw/execlaw/internal/image"
	"github.com/execlaw/execlaw/internal/sandbox/process"
	"github.com/execlaw/execlaw/internal/version"
)

const imageUsage = `Usage: execlaw image <build|list|verify|prune|server> [flags]

  build    build or update a guest image (kernel, initramfs, root filesystem);
           with --oci FILE, also write it as an OCI image archive for pods
  list     show the images built, with their versions and sizes
  verify   rehash every file of every image against its manifest
  prune    delete files no image refers to any more
  server   write the server's own image, this execlaw (static) with CA
           certificates, as an OCI image archive: --oci FILE [--oci-tag REF]
           [--binary PATH], for deploy/kubernetes
`

func imageCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, imageUsage)
		return errors.New("no image command given")
	}
	if args[0] == "server" { // it has no data directory
		return imageServer(ctx, args[1:], stdout, stderr)
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
		printLoad(stdout, img)
		fmt.Fprintf(stdout, "  a pod names it %s, with imagePullPolicy: Never or IfNotPresent\n", img.Ref)
		if agents := m.AgentNames(); len(agents) > 0 {
			fmt.Fprintf(stdout, "  it carries %s: serve --sandbox kubernetes --k8s-image-agents %s offers them\n",
				strings.Join(agents, ", "), strings.Join(agents, ","))
		}
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

// imageServer writes the server's image: the binary deploy/kubernetes runs.
func imageServer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("execlaw image server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ociPath := fs.String("oci", "", "the OCI image archive to write (ctr -n k8s.io images import, podman load, docker load)")
	ociTag := fs.String("oci-tag", "", "the image's name (default "+image.OCIServerRepository+":<short hash>; "+
		"a name without a tag gets the short hash)")
	binary := fs.String("binary", "", "the execlaw to put in it, built with CGO_ENABLED=0 (default: this one)")
	caCerts := fs.String("ca-certs", image.DefaultCACerts, "PEM CA certificates the server in it trusts (model APIs, git hosts)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *ociPath == "" {
		return errors.New("--oci FILE is required: the archive to write")
	}
	if err := image.CheckOCIPath(*ociPath); err != nil {
		return fmt.Errorf("--oci: %w", err)
	}
	if err := image.CheckOCIRef(*ociTag); err != nil {
		return fmt.Errorf("--oci-tag: %w", err)
	}
	o := image.ServerOCIOptions{Path: *ociPath, Ref: *ociTag, Binary: *binary, CACerts: *caCerts, Out: stdout}
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding this execlaw (give --binary): %w", err)
		}
		// Another binary's version is read from its build info.
		o.Binary, o.Version = exe, version.String()
	}
	img, err := image.WriteServerOCI(ctx, o)
	if err != nil {
		return err
	}
	printLoad(stdout, img)
	fmt.Fprintf(stdout, "  or push it where the nodes pull from; deploy/kubernetes/deployment.yaml then runs image: %s\n", img.Ref)
	return nil
}

// printLoad says how to load an archive into a node's container runtime.
func printLoad(w io.Writer, img image.OCIImage) {
	fmt.Fprintf(w, "  load it with `ctr -n k8s.io images import %s` (a cluster node), `podman load -i %[1]s` or `docker load -i %[1]s`;\n", img.Path)
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
