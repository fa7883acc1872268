"""CPU per 1,000 acknowledged messages, split by process, during the
16-sender ingress workload of the load benchmark on Postgres.

    python3 benches/cpu_split.py 1    # one relay
    python3 benches/cpu_split.py 2    # two relays

Runs `cargo bench --bench load -- --store postgres --processes N`, reads
utime+stime of every process from /proc/*/stat 4 s into the run and 5 s
later, and divides by the messages acknowledged in that window (the run's
16-sender rate). Groups: postgres (every Postgres process, including
background ones), relay (hookrelay), loadgen+sink (the bench binary),
other. HOOKRELAY_BENCH_POSTGRES_URL defaults to the local server.
"""
import os, sys, time, subprocess, re
def snap():
    d={}
    for p in os.listdir('/proc'):
        if not p.isdigit(): continue
        try:
            s=open(f'/proc/{p}/stat').read()
        except Exception: continue
        comm=s[s.index('(')+1:s.rindex(')')]
        f=s[s.rindex(')')+2:].split()
        t=int(f[11])+int(f[12])
        g='postgres' if comm.startswith('postgres') else 'relay' if comm.startswith('hookrelay') else 'loadgen+sink' if comm.startswith('load-') else 'other'
        d[p]=(g,t)
    return d
procs=sys.argv[1]
env=dict(os.environ)
env.setdefault('HOOKRELAY_BENCH_POSTGRES_URL', 'postgres://postgres@127.0.0.1:5432/postgres')
b=subprocess.Popen(['cargo','bench','--bench','load','--','--seconds','10','--messages','20000','--store','postgres','--processes',procs],cwd=os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'),env=env,stdout=subprocess.PIPE,stderr=subprocess.DEVNULL,text=True)
time.sleep(4.0); a=snap(); t0=time.time(); time.sleep(5.0); z=snap(); dt=time.time()-t0
out=b.communicate()[0]
tot={}
for p,(g,t) in z.items():
    tot[g]=tot.get(g,0)+t-(a[p][1] if p in a else 0)
rate=float(re.search(r'ingress, 16 senders, 10s \| (\d+) acknowledged',out).group(1))
n=rate*dt
print(f"x{procs}: {rate:.0f}/s;", ", ".join(f"{g} {v*10/n*1000:.0f} ms" for g,v in sorted(tot.items())), f"total {sum(v for g,v in tot.items() if g!='other')*10/n*1000:.0f} ms CPU per 1,000 msgs; busy {sum(tot.values())/100/dt/2*100:.0f}%")
