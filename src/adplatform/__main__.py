from adplatform.cli import app

app()
