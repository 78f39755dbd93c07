"""The long paths, as functions of the shared services (never of the HTTP app or the CLI): bulk
labeling and its background jobs, the learn path (webhooks -> store -> training), training, reporting."""
