import type { Kysely } from 'kysely';
import type { Database, JobState } from '../../db/schema.ts';
import { JobRepository } from '../../db/repositories/job.repository.ts';
import { AppError } from '../../errors.ts';
import { toJobDto, type JobDto } from './job-types.ts';
import type { JobRunner } from './job-runner.ts';

export class JobService {
  #db: Kysely<Database>;
  #runner: JobRunner;
  #repo = new JobRepository();

  constructor(db: Kysely<Database>, runner: JobRunner) {
    this.#db = db;
    this.#runner = runner;
  }

  async get(id: string): Promise<JobDto> {
    const row = await this.#repo.get(this.#db, id);
    if (!row) throw new AppError('JOB_NOT_FOUND', `job ${id} does not exist`);
    return toJobDto(row);
  }

  async list(filter: { states?: JobState[]; kind?: string; resourceId?: string; limit?: number }): Promise<JobDto[]> {
    return (await this.#repo.list(this.#db, filter)).map(toJobDto);
  }

  cancel(id: string): Promise<JobDto> {
    return this.#runner.cancel(id);
  }
}
