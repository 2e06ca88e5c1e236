"""What happens to a run folder around training: whether and where a run resumes, what
its manifest records and where it came from, and how its result is finished (model/
written, metrics recomputed, status set). The spine (fmctl/pipeline.py) calls these in
order; each module holds one of those policies."""
